#!/bin/bash
# The Apache AMQP 1.0 brokers the tests run bridged against, from Maven Central, unpacked once into a cache:
#   bash tests/tools/brokers/fetch.sh [CACHE]     (default /var/cache/bridged-ci/brokers)
# ActiveMQ Artemis and Qpid Broker-J (Java 17 runs both). Each archive is checked against the SHA-1 pinned
# here (Maven Central's own for Artemis; Broker-J publishes none there, so the one of its first download).
set -euo pipefail
cache="${1:-${BRIDGED_BROKER_CACHE:-/var/cache/bridged-ci/brokers}}"
central="https://repo1.maven.org/maven2"
mkdir -p "$cache"
fetch() {  # NAME URL SHA1 DIR: unpack URL into CACHE (its top directory is DIR) unless DIR is there already
  local name="$1" url="$2" sha1="$3" dir="$4" archive
  [ -x "$cache/$dir/bin/$name" ] && return 0
  archive="$cache/$(basename "$url")"
  if [ ! -s "$archive" ]; then curl -sSfL --retry 3 -o "$archive.part" "$url"; mv "$archive.part" "$archive"; fi
  echo "$sha1  $archive" | sha1sum -c --quiet -
  tar -xzf "$archive" -C "$cache"
  [ -x "$cache/$dir/bin/$name" ]
}
fetch artemis "$central/org/apache/activemq/apache-artemis/2.40.0/apache-artemis-2.40.0-bin.tar.gz" \
  757b5e484627d263321ba27257bd5743077eb38c apache-artemis-2.40.0
fetch qpid-server "$central/org/apache/qpid/apache-qpid-broker-j/9.2.0/apache-qpid-broker-j-9.2.0-bin.tar.gz" \
  03ef232bc43d1af83c2b74b866231f535293bcbf qpid-broker/9.2.0
command -v java >/dev/null || { echo "fetch.sh: the brokers need Java 17 (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
