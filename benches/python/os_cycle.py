#!/usr/bin/env python3
"""The Python pattoo OS agent's polling cycle, repeated and timed.

Runs what `pattoo_agent_os_autonomousd` (palisadoes/pattoo-agents,
`bin/pattoo_agent_os_autonomousd.py`) does every polling interval, in one
process as the daemon does: `collector.poll('pattoo_agent_os_autonomousd',
interval)` (the agents' own `pattoo_agents/os/collector.py`, on
PattooShared 0.0.84 and psutil from PyPI), then `PostAgent(agentdata)`,
which builds the body it posts. Nothing is posted: the harness measures the
collector and the body, as the Rust side of `load os` does.

The agents' source is not on PyPI: give a directory holding the
`pattoo_agents` package with --agents-src. Run with `PATTOO_CONFIGDIR` set
(pattoo.yaml and the agent id directory). Prints one line per cycle,
`cycle K cpu_ms C wall_ms W datapoints D`, C being this process's user +
system time; start-up (interpreter, imports) is in no cycle.
"""

import argparse
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--agents-src', required=True)
    parser.add_argument('--cycles', type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, args.agents_src)

    from pattoo_agents.os import collector
    from pattoo_shared.phttp import PostAgent

    for cycle in range(args.cycles):
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        agentdata = collector.poll('pattoo_agent_os_autonomousd', 300)
        server = PostAgent(agentdata)
        datapoints = len(server._data['pattoo_datapoints']['datapoint_pairs'])
        cpu = (time.process_time() - cpu0) * 1000
        wall = (time.perf_counter() - wall0) * 1000
        print('cycle {} cpu_ms {:.3f} wall_ms {:.3f} datapoints {}'.format(
            cycle, cpu, wall, datapoints), flush=True)


if __name__ == '__main__':
    main()
