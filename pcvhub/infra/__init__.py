"""Local infrastructure the project installs and runs itself: Apache Kafka in KRaft mode."""
