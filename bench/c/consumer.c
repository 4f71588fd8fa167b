/* The thinnest consumer there is, for bench/throughput.py: rabbitmq-c (librabbitmq) draining --count
 * messages from --queue and printing {"count": N, "seconds": S} (first delivery to last, scaled to N).
 *
 *   --ack-batch 0   consume with no acks (the broker pushes as fast as it can)
 *   --ack-batch N   prefetch --prefetch, ack (multiple) every N messages, as bridged does
 *   --output FILE   also write every body and a newline to FILE: one write() per ack batch, before its ack
 *                   (what bridged's file sink does, without formatting or fsync)
 *
 * Built by the bench from Debian's librabbitmq-dev: gcc -O2 consumer.c -lrabbitmq.
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, amqp_rpc_reply_t reply) {
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) return;
    fprintf(stderr, "consumer: %s failed (reply type %d, library error %d)\n", what, reply.reply_type,
            reply.library_error);
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

struct buffer {
    char *data;
    size_t used, size;
};

static void append(struct buffer *b, const void *bytes, size_t len) {
    if (b->used + len + 1 > b->size) {
        b->size = (b->used + len + 1) * 2;
        b->data = realloc(b->data, b->size);
        if (b->data == NULL) { perror("consumer: realloc"); exit(1); }
    }
    memcpy(b->data + b->used, bytes, len);
    b->used += len;
    b->data[b->used++] = '\n';
}

static void flush(struct buffer *b, int fd) {
    size_t done = 0;
    while (done < b->used) {
        ssize_t n = write(fd, b->data + done, b->used - done);
        if (n < 0) { perror("consumer: write"); exit(1); }
        done += (size_t)n;
    }
    b->used = 0;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *user = "guest", *password = "guest", *vhost = "/", *queue = NULL;
    const char *output = NULL;
    int port = 5672, count = 100000, batch = 0, prefetch = 1000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *name = argv[i], *value = argv[i + 1];
        if (!strcmp(name, "--host")) host = value;
        else if (!strcmp(name, "--port")) port = atoi(value);
        else if (!strcmp(name, "--user")) user = value;
        else if (!strcmp(name, "--password")) password = value;
        else if (!strcmp(name, "--vhost")) vhost = value;
        else if (!strcmp(name, "--queue")) queue = value;
        else if (!strcmp(name, "--count")) count = atoi(value);
        else if (!strcmp(name, "--ack-batch")) batch = atoi(value);
        else if (!strcmp(name, "--prefetch")) prefetch = atoi(value);
        else if (!strcmp(name, "--output")) output = value;
        else { fprintf(stderr, "consumer: unknown option %s\n", name); return 2; }
    }
    if (queue == NULL || count < 2) { fprintf(stderr, "consumer: --queue and a --count of 2 or more\n"); return 2; }
    int fd = -1;
    if (output != NULL && (fd = open(output, O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0) {
        perror("consumer: open");
        return 1;
    }
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *socket = amqp_tcp_socket_new(conn);
    if (socket == NULL || amqp_socket_open(socket, host, port) != AMQP_STATUS_OK) {
        fprintf(stderr, "consumer: cannot connect to %s:%d\n", host, port);
        return 1;
    }
    die("login", amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, user, password));
    amqp_channel_open(conn, 1);
    die("channel.open", amqp_get_rpc_reply(conn));
    int no_ack = batch == 0;
    if (!no_ack) {
        amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
        die("basic.qos", amqp_get_rpc_reply(conn));
    }
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, no_ack, 0, amqp_empty_table);
    die("basic.consume", amqp_get_rpc_reply(conn));

    struct buffer lines = {NULL, 0, 0};
    double started = 0;
    for (int n = 1; n <= count; n++) {
        amqp_envelope_t envelope;
        amqp_maybe_release_buffers(conn);
        die("consume", amqp_consume_message(conn, &envelope, NULL, 0));
        if (n == 1) started = now();
        if (fd >= 0) append(&lines, envelope.message.body.bytes, envelope.message.body.len);
        if (!no_ack && (n % batch == 0 || n == count)) {
            if (fd >= 0) flush(&lines, fd);
            if (amqp_basic_ack(conn, 1, envelope.delivery_tag, 1) != AMQP_STATUS_OK) {
                fprintf(stderr, "consumer: ack failed\n");
                return 1;
            }
        }
        amqp_destroy_envelope(&envelope);
    }
    if (fd >= 0) { flush(&lines, fd); close(fd); }
    double elapsed = now() - started;
    printf("{\"count\": %d, \"seconds\": %f}\n", count, elapsed * count / (count - 1));
    amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
