"""Worker floor: talks to the other workers only through Kafka topics."""
