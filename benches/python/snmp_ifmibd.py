#!/usr/bin/env python3
"""The Python `pattoo_agent_snmp_ifmibd` daemon's loop, in the foreground.

Loads `bin/pattoo_agent_snmp_ifmibd.py` from a palisadoes/pattoo-agents
tree given with --agents-src (a directory named `pattoo-agents`, as the
script insists) and runs its `PollingAgent.query()`: the loop the daemon
runs once forked, unchanged: `collector.poll()` (every target walked in a
`multiprocessing.Pool` of `cpu_count()` workers made for the poll, with
easysnmp), `PostAgent(agentdata).post()` to the pattoo API of
`pattoo.yaml`, `purge()` on success, then sleep the rest of
`polling_interval`. Nothing forks into the background, so whoever started
this process can measure it and the pool workers it reaps.

The one addition: after each post a line on stdout,
`posted K values V success S`, V being the datapoints in the body, so the
caller knows when a cycle is over. Runs until killed. Run with
`PATTOO_CONFIGDIR` set.
"""

import argparse
import importlib.util
import os
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--agents-src', required=True)
    args = parser.parse_args()
    script = os.path.join(
        args.agents_src, 'bin', 'pattoo_agent_snmp_ifmibd.py')
    spec = importlib.util.spec_from_file_location('ifmibd', script)
    daemon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(daemon)

    posts = 0

    class CountingPost(daemon.PostAgent):
        def post(self):
            nonlocal posts
            success = super().post()
            values = len((self._data or {}).get(
                'pattoo_datapoints', {}).get('datapoint_pairs', []))
            print('posted {} values {} success {}'.format(
                posts, values, success), flush=True)
            posts += 1
            return success

    daemon.PostAgent = CountingPost
    daemon.log.env()
    daemon.PollingAgent(daemon.PATTOO_AGENT_SNMP_IFMIBD).query()


if __name__ == '__main__':
    sys.exit(main())
