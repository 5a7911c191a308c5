#!/usr/bin/env python3
"""A BACnet/IP device for the tests: BAC0 (22.9.21, on bacpypes) serving
device 1234 on UDP ADDRESS:PORT (port 0: any free port; the test finds it
in /proc). Prints `ready` when its objects are in place.

    python3 bacnet_sim.py 127.0.0.2 47808

Analog Values 1-4 are those of the recorded Python agent's run
(SPEC-bacnet-compat.md §7); one object of every other input, output and
value type follows. Instance 99 of any type does not exist.
"""
import sys
import time

import BAC0
from BAC0.core.devices.local.models import (
    analog_input, analog_output, analog_value, binary_input, binary_output,
    binary_value, multistate_input, multistate_output, multistate_value)

ip = sys.argv[1] if len(sys.argv) > 1 else '127.0.0.2'
port = int(sys.argv[2]) if len(sys.argv) > 2 else 47808
BAC0.log_level('error')
dev = BAC0.lite(ip=ip + '/32', port=port, deviceId=1234,
                localObjName='pattoo-sim')
made = None
for instance, name, value in [
        (1, 'Supply Air Temp', 21.5),
        (2, 'Return Air Temp', -3.25),
        (3, 'Fan Speed', 1500),
        (4, 'Setpoint', 21.3)]:   # 21.3 is not exact as a REAL (f32)
    made = analog_value(instance=instance, name=name, presentValue=value)
made = analog_input(instance=1, name='Outside Air Temp', presentValue=-7.5)
made = analog_output(instance=1, name='Damper Position', presentValue=42.25)
made = binary_input(instance=1, name='Filter Alarm', presentValue='active')
made = binary_output(instance=1, name='Fan Command', presentValue='inactive')
made = binary_value(instance=1, name='Occupied', presentValue='active')
made = multistate_input(instance=1, name='Mode', presentValue=2)
made = multistate_output(instance=1, name='Stage', presentValue=3)
made = multistate_value(instance=1, name='Season', presentValue=1)
# The factory keeps every object made above; this adds them all.
made.add_objects_to_application(dev)
print('ready', flush=True)
while True:
    time.sleep(1)
