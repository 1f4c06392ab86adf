"""What the hooks, triggers, operators and sensors of the AEP provider share."""
