#!/usr/bin/env python3
"""The Python pattoo Modbus TCP agent's polling cycle, repeated and timed.

Reproduces what `pattoo_agent_modbustcpd` (pattoo-agents: the daemon loop
in `bin/pattoo_agent_modbustcpd.py`, `poll()` and `_serial_poller()` in
`pattoo_agents/modbus/tcp/collector.py`, the register grouping in
`pattoo_agents/modbus/tcp/configuration.py`) does every polling interval,
on PattooShared 0.0.84 and pymodbus 2.5.3 as published on PyPI. The agent
itself is not on PyPI, so its few lines of glue are written out here, in
its order, calling the same library functions:

1. Read `pattoo.yaml` and `pattoo_agent_modbustcpd.yaml` (the agent builds
   its configuration object anew at every poll).
2. Per polling group and register table, group the registers by multiplier
   into runs of consecutive numbers: one read per run.
3. `AgentPolledData` (reads the agent id file).
4. Per target, in a `multiprocessing.Pool` of `cpu_count()` workers created
   for this poll, as the agent does (`--no-pool`: in this process): per run
   a new `ModbusTcpClient`, hence a new TCP connection, and one read. Input
   registers are read with the run's count and unit; holding registers with
   the start address alone, so pymodbus reads one register of unit 0, as the
   agent does (`--full-holding` reads the whole run instead). One
   `DataPoint` per register read: key `input_register_N` or
   `holding_register_N`, value times the multiplier, data type int, metadata
   `unit` as three digits (its checksum updated); `TargetDataPoints.add`
   (which drops duplicate checksums).
5. `PostAgent(agentdata)`: the converter adds the agent's metadata to every
   datapoint (a checksum step per checksummed pair) and builds the key/value
   pairs; `post()` sends the JSON with requests; on success `purge()` lists
   the agent's cache directory, as the daemon loop does.

The one departure: targets are written `host:port` and the port is given to
`ModbusTcpClient` (the agent always connects to port 502), so that many
simulated devices can share one loopback address.

Run with `PATTOO_CONFIGDIR` set. Prints one line per cycle,
`cycle K cpu_ms C wall_ms W values V errors E`, where C is this process's
user + system time plus that of the pool workers reaped during the cycle;
start-up (interpreter, imports) is not in any cycle.
"""

import argparse
import itertools
import multiprocessing
import os
import resource
import sys
import time

from pymodbus.client.sync import ModbusTcpClient

from pattoo_shared import configuration, files
from pattoo_shared.constants import DATA_INT
from pattoo_shared.phttp import PostAgent
from pattoo_shared.variables import (
    AgentPolledData, DataPoint, DataPointMetadata, TargetDataPoints)

AGENT_PROGRAM = 'pattoo_agent_modbustcpd'
TABLES = (('input_registers', 'input_register', 30001),
          ('holding_registers', 'holding_register', 40001))
FULL_HOLDING = False


class Run(object):
    """One read: a run of consecutive registers of one table."""

    def __init__(self, table, first, count, unit, multiplier):
        self.table = table
        self.first = first
        self.count = count
        self.unit = unit
        self.multiplier = multiplier


class TargetRuns(object):
    """The runs to read from one target."""

    def __init__(self, target, runs):
        self.target = target
        self.runs = runs


def target_runs():
    """The configuration, read as the agent reads it at every poll."""
    configuration.Config()
    agent_yaml = files.read_yaml_file(
        configuration.agent_config_filename(AGENT_PROGRAM))
    groups = configuration.search(
        AGENT_PROGRAM, 'polling_groups', agent_yaml, die=True)
    result = []
    for group in groups:
        unit = group.get('unit', 0)
        for table, _, _ in TABLES:
            if table not in group:
                continue
            points = configuration.get_polling_points(
                [{'address': item} if isinstance(item, int) else item
                 for item in group[table]])
            by_multiplier = {}
            for point in points:
                by_multiplier.setdefault(
                    point.multiplier, set()).add(point.address)
            runs = []
            for multiplier, addresses in sorted(by_multiplier.items()):
                ordered = sorted(addresses)
                for _, run in itertools.groupby(
                        enumerate(ordered), lambda pair: pair[1] - pair[0]):
                    run = [address for _, address in run]
                    runs.append(
                        Run(table, run[0], len(run), unit, multiplier))
            for target in group['ip_targets']:
                result.append(TargetRuns(target, runs))
    return result


def poll_target(target_runs_):
    """One target's reads and datapoints, as the agent's _serial_poller."""
    host, port = target_runs_.target.rsplit(':', 1)
    ddv = TargetDataPoints(target_runs_.target)
    datapoints = []
    errors = 0
    for run in target_runs_.runs:
        client = ModbusTcpClient(host, port=int(port))
        prefix, base = [(name, base) for table, name, base in TABLES
                        if table == run.table][0]
        address = run.first - base
        try:
            if run.table == 'input_registers':
                response = client.read_input_registers(
                    address, count=run.count, unit=run.unit)
            elif FULL_HOLDING:
                response = client.read_holding_registers(
                    address, count=run.count, unit=run.unit)
            else:
                response = client.read_holding_registers(address)
        except Exception:
            errors += 1
            continue
        if response.isError() is True:
            errors += 1
            continue
        for index, raw in enumerate(response.registers):
            datapoint = DataPoint(
                '{}_{}'.format(prefix, run.first + index),
                raw * run.multiplier, data_type=DATA_INT)
            datapoint.add(DataPointMetadata('unit', str(run.unit).zfill(3)))
            datapoints.append(datapoint)
    ddv.add(datapoints)
    return ddv, errors


def poll(use_pool, polling_interval):
    """One poll and post, as the daemon loop runs it."""
    agentdata = AgentPolledData(AGENT_PROGRAM, polling_interval)
    arguments = [(item,) for item in target_runs()]
    if use_pool:
        with multiprocessing.Pool(
                processes=max(1, multiprocessing.cpu_count())) as pool:
            results = pool.starmap(poll_target, arguments)
        pool.join()
    else:
        results = [poll_target(*argument) for argument in arguments]
    agentdata.add([ddv for ddv, _ in results])
    server = PostAgent(agentdata)
    if server.post() is not True:
        sys.exit('posting to the receiver failed')
    server.purge()
    values = sum(len(ddv.data) for ddv, _ in results)
    return values, sum(errors for _, errors in results)


def cpu_seconds():
    """User + system time of this process and its reaped children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main():
    global FULL_HOLDING
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cycles', type=int, default=20)
    parser.add_argument('--no-pool', action='store_true')
    parser.add_argument('--full-holding', action='store_true')
    args = parser.parse_args()
    FULL_HOLDING = args.full_holding
    agent_yaml = files.read_yaml_file(
        configuration.agent_config_filename(AGENT_PROGRAM))
    polling_interval = agent_yaml[AGENT_PROGRAM].get('polling_interval', 300)
    for cycle in range(args.cycles):
        cpu0 = cpu_seconds()
        wall0 = time.monotonic()
        values, errors = poll(not args.no_pool, polling_interval)
        wall = time.monotonic() - wall0
        cpu = cpu_seconds() - cpu0
        print('cycle {} cpu_ms {:.3f} wall_ms {:.3f} values {} errors {}'.format(
            cycle, cpu * 1e3, wall * 1e3, values, errors), flush=True)


if __name__ == '__main__':
    main()
