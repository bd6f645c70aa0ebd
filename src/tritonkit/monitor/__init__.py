"""The monitoring sidecar: drift verdicts from binned counters, alert rules that deliver them."""
