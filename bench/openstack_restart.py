"""Notifications lost per broker restart: zero-touch mode (etc/openstack.yaml) against topic mode (openstack-topics).

Five services (real oslo.messaging notifiers, each also sending to bridged's
topic as etc/openstack-topics.yaml asks) notify at --rate a second each on a
fresh vhost. Two bridged processes read the same stream, one per mode. The
broker restarts (stop_app, start_app) --restarts times; then every sent
notification is looked for in each mode's files.

Zero-touch cannot reach zero: after a restart the services' non-durable
exchanges are gone, and a service publishes the moment it declares its
exchange again, before bridged (which only checks for it) can bind.

    python bench/openstack_restart.py [--restarts 3] [--rate 20] [--flow 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.conftest import BROKER_HOST, rabbitmqctl
from tests.integration.openstack import Cloud, SteadySender, captured, openstack_config

SERVICES = ("nova", "glance", "neutron", "cinder", "keystone")


def start_bridged(config: dict, directory: Path, vhost: str) -> subprocess.Popen[bytes]:
    path = directory / "bridged.yaml"
    path.write_text(json.dumps(config))
    env = {**os.environ, "BRIDGED_BROKER_URL": f"amqp://guest:guest@{BROKER_HOST}/{vhost}"}
    return subprocess.Popen([sys.executable, "-m", "bridged", "--config", str(path), "--log-level", "warning"],
                            env=env, stderr=open(directory / "bridged.stderr", "wb"))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="notifications a second, per service")
    parser.add_argument("--flow", type=float, default=10.0, help="seconds of traffic before each restart")
    args = parser.parse_args()
    vhost = f"bridged-bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {mode: Path(tmp) / mode for mode in ("zero-touch", "topic mode")}
        procs = []
        for mode, config_name in (("zero-touch", "etc/openstack.yaml"), ("topic mode", "etc/openstack-topics.yaml")):
            dirs[mode].mkdir()
            procs.append(start_bridged(openstack_config(dirs[mode], config_name), dirs[mode], vhost))
        cloud = Cloud(vhost, topic_mode=True, retry=None, services=SERVICES)
        for service in SERVICES:
            cloud.warm_up(service)  # the services start: zero-touch binds their exchanges
        time.sleep(2)
        senders = [SteadySender(cloud, service, args.rate, "bench") for service in SERVICES]
        try:
            for sender in senders:
                sender.start()
            for _ in range(args.restarts):
                time.sleep(args.flow)
                rabbitmqctl("stop_app")
                rabbitmqctl("start_app")
                rabbitmqctl("await_startup")
            time.sleep(args.flow)
        finally:
            for sender in senders:
                sender.stop()
            for sender in senders:
                sender.join(60)
        time.sleep(5)  # the last ones reach the files
        sent = {ident: service for ident, service in cloud.sent.items() if ident.startswith("bench:")}
        print(f"{len(SERVICES)} services at {args.rate:g}/s each, {args.restarts} restarts (stop_app/start_app), "
              f"{len(sent)} notifications sent")  # fmt: skip
        print(f"{'mode':12s} {'lost':>6s} {'lost per restart':>17s}")
        for mode, directory in dirs.items():
            got = {service: captured(directory, service) for service in SERVICES}
            lost = sum(1 for ident, service in sent.items() if ident not in got[service])
            print(f"{mode:12s} {lost:6d} {lost / args.restarts:17.1f}")
        cloud.close()
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    rabbitmqctl("delete_vhost", vhost)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
