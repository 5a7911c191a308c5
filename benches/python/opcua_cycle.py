#!/usr/bin/env python3
"""The Python pattoo OPC UA agent's polling cycle, repeated and timed.

Reproduces what `pattoo_agent_opcuad` (pattoo-agents: the daemon loop in
`bin/pattoo_agent_opcuad.py`, `poll()`, `_serial_poller()` and
`_serial_poller_async()` in `pattoo_agents/opcua/collector.py`, the
groups in `pattoo_agents/opcua/configuration.py`) does every polling
interval, on PattooShared 0.0.84 and asyncua 1.1.8 as published on PyPI.
The agent itself is not on PyPI, so its few lines of glue are written out
here, in its order, calling the same library functions:

1. Read `pattoo.yaml` and `pattoo_agent_opcuad.yaml` (the agent builds its
   configuration object anew at every poll); `get_polling_points` per
   group.
2. `AgentPolledData` (reads the agent id file).
3. Per group, in a `multiprocessing.Pool` of `cpu_count()` workers created
   for this poll, as the agent does (`--no-pool`: in this process), a new
   event loop: `Client(url)`, `set_user`, `set_password`, `connect()`,
   per node `get_node(address)` and `read_value()` (one Read each),
   `DataPoint(address, value)` with the metadata `OPCUA Server`,
   `disconnect()`. The agent's 0.1 s sleep per group is left out: it is
   not CPU.
4. `PostAgent(agentdata)`: the converter adds the agent's metadata to
   every datapoint and builds the key/value pairs. Not posted (our side's
   figure builds the body and does not post either).

Run with `PATTOO_CONFIGDIR` set. Prints one line per cycle,
`cycle K cpu_ms C wall_ms W values V`, where C is this process's user +
system time plus that of the pool workers reaped during the cycle;
start-up (interpreter, imports) is not in any cycle.
"""

import argparse
import asyncio
import multiprocessing
import resource
import time

from asyncua import Client

from pattoo_shared import configuration, files
from pattoo_shared.phttp import PostAgent
from pattoo_shared.variables import (
    AgentPolledData, DataPoint, DataPointMetadata, TargetDataPoints)

AGENT_PROGRAM = 'pattoo_agent_opcuad'


def groups():
    """The groups, read as the agent reads them at every poll."""
    configuration.Config()
    agent_yaml = files.read_yaml_file(
        configuration.agent_config_filename(AGENT_PROGRAM))
    found = configuration.search(
        AGENT_PROGRAM, 'polling_groups', agent_yaml, die=True)
    result = []
    for group in found:
        points = configuration.get_polling_points(group.get('nodes'))
        result.append((group.get('ip_target'), group.get('ip_port'),
                       group.get('username'), group.get('password'), points))
    return result


async def poll_group_async(group):
    ip_target, ip_port, username, password, points = group
    url = 'opc.tcp://{}:{}'.format(ip_target, ip_port)
    ddv = TargetDataPoints(ip_target)
    client = Client(url=url)
    client.set_user(username)
    client.set_password(password)
    await client.connect()
    for point in points:
        node = client.get_node(point.address)
        value = await node.read_value()
        if bool(point.multiplier) is True:
            value = value * point.multiplier
        else:
            value = 0
        datapoint = DataPoint(point.address, value)
        datapoint.add(DataPointMetadata('OPCUA Server', ip_target))
        ddv.add(datapoint)
    await client.disconnect()
    return ddv


def poll_group(group):
    asyncio.set_event_loop(asyncio.new_event_loop())
    loop = asyncio.get_event_loop()
    ddv = loop.run_until_complete(poll_group_async(group))
    loop.close()
    return ddv


def poll(use_pool, polling_interval):
    agentdata = AgentPolledData(AGENT_PROGRAM, polling_interval)
    arguments = [(group,) for group in groups()]
    if use_pool:
        with multiprocessing.Pool(
                processes=max(1, multiprocessing.cpu_count())) as pool:
            results = pool.starmap(poll_group, arguments)
        pool.join()
    else:
        results = [poll_group(*argument) for argument in arguments]
    agentdata.add(results)
    PostAgent(agentdata)
    return sum(len(ddv.data) for ddv in results)


def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cycles', type=int, default=5)
    parser.add_argument('--no-pool', action='store_true')
    args = parser.parse_args()
    agent_yaml = files.read_yaml_file(
        configuration.agent_config_filename(AGENT_PROGRAM))
    polling_interval = agent_yaml[AGENT_PROGRAM].get('polling_interval', 300)
    for cycle in range(args.cycles):
        cpu0 = cpu_seconds()
        wall0 = time.monotonic()
        values = poll(not args.no_pool, polling_interval)
        wall = time.monotonic() - wall0
        cpu = cpu_seconds() - cpu0
        print('cycle {} cpu_ms {:.3f} wall_ms {:.3f} values {}'.format(
            cycle, cpu * 1e3, wall * 1e3, values), flush=True)


if __name__ == '__main__':
    main()
