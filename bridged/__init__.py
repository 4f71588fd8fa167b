"""bridged: a daemon that bridges AMQP queues to log files, stdout and syslog."""

__version__ = "0.1.0"
