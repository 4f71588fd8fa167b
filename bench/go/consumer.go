// A compiled reference consumer for bench/throughput.py: drains --count
// messages from --queue and prints {"count": N, "seconds": S} (first
// delivery to last). --ack-batch 0 consumes with no acks (auto-ack, the
// broker pushes as fast as it can); N acks with multiple=true every N
// messages under a --prefetch window, as bridged does. It writes nothing.
// Built offline by the bench from Debian's golang-go and
// golang-github-rabbitmq-amqp091-go-dev (GOPATH mode, no network).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	url := flag.String("url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	queue := flag.String("queue", "", "queue to drain")
	count := flag.Int("count", 100000, "messages to receive")
	batch := flag.Int("ack-batch", 0, "0: no acks; N: ack (multiple) every N messages")
	prefetch := flag.Int("prefetch", 1000, "basic.qos prefetch when acking")
	flag.Parse()

	conn, err := amqp.Dial(*url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: connect:", err)
		os.Exit(1)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: channel:", err)
		os.Exit(1)
	}
	autoAck := *batch == 0
	if !autoAck {
		if err := ch.Qos(*prefetch, 0, false); err != nil {
			fmt.Fprintln(os.Stderr, "consumer: qos:", err)
			os.Exit(1)
		}
	}
	deliveries, err := ch.Consume(*queue, "", autoAck, false, false, false, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer: consume:", err)
		os.Exit(1)
	}
	var started time.Time
	n := 0
	for d := range deliveries {
		if n == 0 {
			started = time.Now()
		}
		n++
		if !autoAck && (n%*batch == 0 || n == *count) {
			if err := d.Ack(true); err != nil {
				fmt.Fprintln(os.Stderr, "consumer: ack:", err)
				os.Exit(1)
			}
		}
		if n == *count {
			break
		}
	}
	elapsed := time.Since(started).Seconds()
	// The first delivery started the clock: scale to the whole count, as the other contenders do.
	json.NewEncoder(os.Stdout).Encode(map[string]float64{
		"count": float64(n), "seconds": elapsed * float64(*count) / float64(*count-1),
	})
}
