#!/usr/bin/env bash
# The main job: set up (packages, build), then run llamac on this machine's CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
build/llamac inspect --model tiny-1m
build/llamac forward --model tiny-1m --batch 8 --seq 128 --steps 3
