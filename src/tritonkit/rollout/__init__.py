"""Rollouts of a new model version through the gateway: canary, blue-green and rolling, gated
and rolled back automatically (`engine`, `gates`, `cli`: `make rollout VERSION=n`)."""
