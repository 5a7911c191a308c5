"""A Modbus server from pymodbus, for the interoperability tests.

Usage: pymodbus_server.py WHERE JSON [--framer socket|rtu] [--baudrate N]

WHERE is a TCP port on 127.0.0.1, or a serial device path (starting with
/), such as one end of a socat pty pair. The framer is `socket` (Modbus
TCP, the default on TCP) or `rtu` (RTU frames with CRC; the only framer on
a serial device).

JSON maps the tables "co", "di", "ir" and "hr" to lists of values starting
at zero-based address 0. Reads beyond a list answer exception 2 (illegal
data address). Every unit id is served by the same data. Prints "ready" on
stdout once it listens (or has the serial port open) and serves until
killed.
"""

import argparse
import asyncio
import json
import sys

try:
    from pymodbus import FramerType
    from pymodbus.datastore import (
        ModbusSequentialDataBlock,
        ModbusServerContext,
        ModbusSlaveContext,
    )
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
except ImportError as error:
    print(
        f"pymodbus is not importable ({error}): pip install pymodbus==3.8.6 pyserial==3.5",
        file=sys.stderr,
    )
    sys.exit(3)


def block(values):
    # ModbusSlaveContext adds 1 to every wire address before looking it up,
    # so a block starting at 1 holds wire address 0 first.
    return ModbusSequentialDataBlock(1, values)


async def serve(args, context):
    if args.where.startswith("/"):
        server = ModbusSerialServer(
            context,
            framer=FramerType.RTU,
            port=args.where,
            baudrate=args.baudrate,
        )
    else:
        framer = FramerType.RTU if args.framer == "rtu" else FramerType.SOCKET
        server = ModbusTcpServer(
            context, framer=framer, address=("127.0.0.1", int(args.where))
        )
    await server.serve_forever(background=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("where")
    parser.add_argument("data")
    parser.add_argument("--framer", choices=["socket", "rtu"], default="socket")
    parser.add_argument("--baudrate", type=int, default=9600)
    args = parser.parse_args()
    data = json.loads(args.data)
    device = ModbusSlaveContext(
        co=block(data.get("co", [0])),
        di=block(data.get("di", [0])),
        ir=block(data.get("ir", [0])),
        hr=block(data.get("hr", [0])),
    )
    context = ModbusServerContext(slaves=device, single=True)
    asyncio.run(serve(args, context))


if __name__ == "__main__":
    main()
