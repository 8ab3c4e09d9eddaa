#!/usr/bin/env python3
"""Write N CreateUser bodies, one per line, each with a distinct user_id.

oha cannot vary a request body by itself; `oha -Z FILE` picks one of these
lines at random per request. Used by bench/engine.sh and bench/cpu.sh.

    python3 bench/oha_bodies.py OUT [N]     (N defaults to 2,000,000)
"""
import sys

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
with open(out, "w") as f:
    for i in range(n):
        f.write('{"user_id":"oha-%d","first_name":"john","last_name":"smith",'
                '"phone_number":"+18005550100","locale":"en-US"}\n' % i)
