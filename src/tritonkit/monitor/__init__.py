"""The monitoring sidecar: drift verdicts from binned counters, and alert rules that deliver them."""
