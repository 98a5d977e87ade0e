"""The Redis check and everything it needs: connection, RESP, replies, topologies, canaries, IAM."""
