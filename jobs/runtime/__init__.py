"""What a job runs on: devices, threads, precision and random states (``devices``), and many
processes (``distributed``)."""
