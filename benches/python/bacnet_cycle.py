#!/usr/bin/env python3
"""The Python pattoo BACnet/IP agent's polling cycle, repeated and timed.

Reproduces what `pattoo_agent_bacnetipd` (pattoo-agents:
`bin/pattoo_agent_bacnetipd.py`, `pattoo_agents/bacnet/ip/collector.py` and
`configuration.py`) does every polling interval, on BAC0 22.9.21 (bacpypes
0.19.0) and PattooShared 0.0.84 as published on PyPI. The agent itself is
not on PyPI, so its few lines of glue are written out here, in its order,
calling the same library functions:

1. `BAC0.connect(ip=agent_ip_address + '/32', bbmdTTL=3)`, once (not timed).
2. Per cycle: read `pattoo_agent_bacnetipd.yaml` (the agent builds its
   configuration anew at every poll); per group with `points`, per
   `ip_targets` entry, `get_polling_points` and `IPTargetPollingPoints`.
3. `AgentPolledData` (reads the agent id file).
4. Per target in turn, `gethostbyname` of the target, then per point two
   reads, `"{ip} analogValue {address} presentValue"` and `... objectName"`;
   a `DataPoint` `analog_value_point_{address}` of `float(value) *
   multiplier` (data type float) with metadata `target` and `object_name`;
   `TargetDataPoints.add`.
5. `converter.agentdata_to_post` and `posting_data_points`: the body
   `PostAgent` would send (not sent: the agent's own cycle is measured
   without its post too).

Run with `PATTOO_CONFIGDIR` set. Prints one line per cycle,
`cycle K cpu_ms C wall_ms W values V`, C being this process's user +
system time (all its threads, bacpypes' included).
"""

import os
import socket
import sys
import time

import BAC0
import yaml

from pattoo_shared import configuration, converter, data
from pattoo_shared.constants import DATA_FLOAT, DATA_STRING
from pattoo_shared.variables import (
    AgentPolledData, DataPoint, DataPointMetadata, IPTargetPollingPoints,
    TargetDataPoints)

PROGRAM = 'pattoo_agent_bacnetipd'


def agent_yaml():
    path = os.path.join(os.environ['PATTOO_CONFIGDIR'], PROGRAM + '.yaml')
    with open(path) as handle:
        return yaml.safe_load(handle)[PROGRAM]


def targets():
    result = []
    for group in agent_yaml()['polling_groups']:
        if 'points' not in group:
            continue
        for ip_target in group['ip_targets']:
            points = configuration.get_polling_points(group['points'])
            dpt = IPTargetPollingPoints(ip_target)
            dpt.add(points)
            if dpt.valid is True:
                result.append(dpt)
    return result


def read(bacnet, ip, address, what):
    try:
        return bacnet.read('{} analogValue {} {}'.format(ip, address, what))
    except Exception:
        return None


def poll(bacnet, interval):
    agentdata = AgentPolledData(PROGRAM, interval)
    ddv_list = []
    for item in targets():
        ddv = TargetDataPoints(item.target)
        ip = socket.gethostbyname(item.target)
        datapoints = []
        for point in item.data:
            value = read(bacnet, ip, point.address, 'presentValue')
            name = read(bacnet, ip, point.address, 'objectName')
            if value is None:
                continue
            if data.is_numeric(value) is True:
                value = float(value) * point.multiplier
                data_type = DATA_FLOAT
            else:
                data_type = DATA_STRING
            datapoint = DataPoint(
                'analog_value_point_{}'.format(point.address), value,
                data_type=data_type)
            datapoint.add(DataPointMetadata('target', item.target))
            if name is not None:
                datapoint.add(DataPointMetadata('object_name', name))
            datapoints.append(datapoint)
        ddv.add(datapoints)
        if ddv.valid is True:
            ddv_list.append(ddv)
    agentdata.add(ddv_list)
    body = converter.posting_data_points(converter.agentdata_to_post(agentdata))
    return sum(len(ddv.data) for ddv in ddv_list), body


def main():
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    config = agent_yaml()
    BAC0.log_level('error')
    bacnet = BAC0.connect(ip='{}/32'.format(config['agent_ip_address']),
                          bbmdTTL=3)
    interval = config.get('polling_interval', 300)
    # One warm-up cycle, then the measured ones.
    for cycle in range(cycles + 1):
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        values, _ = poll(bacnet, interval)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        print('cycle {} cpu_ms {:.3f} wall_ms {:.3f} values {}'.format(
            cycle, cpu * 1e3, wall * 1e3, values), flush=True)
    bacnet.disconnect()


if __name__ == '__main__':
    main()
