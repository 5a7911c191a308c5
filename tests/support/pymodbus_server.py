"""A Modbus TCP server from pymodbus, for the interoperability test.

Usage: pymodbus_server.py PORT JSON

JSON maps the tables "co", "di", "ir" and "hr" to lists of values starting
at zero-based address 0. Reads beyond a list answer exception 2 (illegal
data address). Every unit id is served by the same data. Listens on
127.0.0.1:PORT until killed.
"""

import asyncio
import json
import sys

try:
    from pymodbus.datastore import (
        ModbusSequentialDataBlock,
        ModbusServerContext,
        ModbusSlaveContext,
    )
    from pymodbus.server import StartAsyncTcpServer
except ImportError as error:
    print(
        f"pymodbus is not importable ({error}): pip install pymodbus==3.8.6",
        file=sys.stderr,
    )
    sys.exit(3)


def block(values):
    # ModbusSlaveContext adds 1 to every wire address before looking it up,
    # so a block starting at 1 holds wire address 0 first.
    return ModbusSequentialDataBlock(1, values)


def main():
    port = int(sys.argv[1])
    data = json.loads(sys.argv[2])
    device = ModbusSlaveContext(
        co=block(data.get("co", [0])),
        di=block(data.get("di", [0])),
        ir=block(data.get("ir", [0])),
        hr=block(data.get("hr", [0])),
    )
    context = ModbusServerContext(slaves=device, single=True)
    asyncio.run(StartAsyncTcpServer(context=context, address=("127.0.0.1", port)))


if __name__ == "__main__":
    main()
