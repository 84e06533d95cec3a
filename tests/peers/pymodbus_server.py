#!/usr/bin/env python3
"""An independent Modbus slave for fumegrid's tests: pymodbus, not our own simulator.

    pymodbus_server.py --tcp 127.0.0.1:5020 --slave 1 --values values.json
    pymodbus_server.py --rtu /tmp/ttyB --baud 9600 --parity E --slave 3 --values values.json

values.json gives each table as {start address: [consecutive values]}; addresses are zero-based
PDU addresses (what a profile's `address` means):

    {"holding": {"0": [16800, 0, 1, 1]}, "input": {"10": [7]},
     "coil": {"0": [0, 1]}, "discrete": {"3": [1]}}

Each table answers from its lowest to its highest given address (gaps read as 0); a request that
reaches outside gets exception 2 (illegal data address), as a real monitor's firmware does, and a
table with no values answers nothing but exception 2. Writes are accepted inside the same range.
Requests for another slave id get no reply at all, as on a shared RS-485 bus.

Prints `ready` on stdout (flushed) once listening, and exits 0 by itself after --duration seconds.

On a pty (socat) the parity is not applied: ptys have none, and see the comment in serve().

Written against pymodbus 3.9.2 (scripts/install-test-deps.sh pins it). Its ModbusSlaveContext is
not used on purpose: in 3.9 it adds 1 to every address and ignores co/ir/hr unless di is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from pymodbus.datastore import ModbusBaseSlaveContext, ModbusServerContext
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

TABLES = ("holding", "input", "coil", "discrete")
# Function code → table, as in the Modbus spec (FC 22/23 are read/write variants on holding).
FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input"}
FC_TABLE.update({fc: "holding" for fc in (3, 6, 16, 22, 23)})


class Tables(ModbusBaseSlaveContext):
    """One slave's four tables, each a dense block [start, start + len)."""

    def __init__(self, values: dict[str, dict[str, list[int]]]):
        self.blocks: dict[str, tuple[int, list[int]]] = {}
        for table, chunks in values.items():
            if table not in TABLES:
                raise SystemExit(f"unknown table {table!r}, expected one of {TABLES}")
            cells: dict[int, int] = {}
            for start, words in chunks.items():
                for i, w in enumerate(words):
                    addr = int(start, 0) + i
                    limit = 1 if table in ("coil", "discrete") else 0xFFFF
                    if not (0 <= addr <= 0xFFFF and 0 <= int(w) <= limit):
                        raise SystemExit(f"{table} {addr}: value {w} out of range")
                    cells[addr] = int(w)
            if cells:
                lo, hi = min(cells), max(cells)
                self.blocks[table] = (lo, [cells.get(a, 0) for a in range(lo, hi + 1)])

    def reset(self):
        pass

    def _slice(self, fc: int, address: int, count: int) -> tuple[list[int], int] | None:
        block = self.blocks.get(FC_TABLE[fc])
        if block is None:
            return None
        lo, cells = block
        start = address - lo
        if start < 0 or start + count > len(cells):
            return None
        return cells, start

    def getValues(self, fc_as_hex, address, count=1):
        hit = self._slice(fc_as_hex, address, count)
        if hit is None:
            return ExceptionResponse.ILLEGAL_ADDRESS
        cells, start = hit
        out = cells[start : start + count]
        if FC_TABLE[fc_as_hex] in ("coil", "discrete"):
            return [bool(v) for v in out]
        return out

    def setValues(self, fc_as_hex, address, values):
        hit = self._slice(fc_as_hex, address, len(values))
        if hit is None:
            return ExceptionResponse.ILLEGAL_ADDRESS
        cells, start = hit
        cells[start : start + len(values)] = [int(v) for v in values]
        return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--rtu", metavar="PATH", help="serial device or pty to serve RTU on")
    where.add_argument("--tcp", metavar="HOST:PORT", help="address to serve Modbus TCP on")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--parity", choices=("E", "O", "N"), default="N")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1)
    p.add_argument("--slave", type=int, default=1, help="slave (unit) id, 1..247")
    p.add_argument("--values", metavar="FILE.json", help="register and bit values")
    p.add_argument("--duration", type=float, default=60.0, help="exit after this many seconds")
    args = p.parse_args(argv)
    if not 1 <= args.slave <= 247:
        p.error("--slave must be 1..247")
    return args


async def serve(args: argparse.Namespace) -> None:
    values = {}
    if args.values:
        with open(args.values, encoding="utf-8") as f:
            values = json.load(f)
    context = ModbusServerContext(slaves={args.slave: Tables(values)}, single=False)
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        server = ModbusTcpServer(
            context,
            address=(host.strip("[]") or "127.0.0.1", int(port)),
            ignore_missing_slaves=True,
        )
    else:
        parity = args.parity
        if parity != "N" and os.path.realpath(args.rtu).startswith("/dev/pts/"):
            # A pty carries bytes, not parity bits, and on some kernels (seen on 6.18) tcsetattr
            # with PARENB|CLOCAL on a pty fails with EINVAL when the pty already has CLOCAL, which
            # pyserial's second reconfigure (pymodbus sets timeout=0) always triggers.
            print(f"pymodbus_server: {args.rtu} is a pty; parity {parity} not set", file=sys.stderr)
            parity = "N"
        server = ModbusSerialServer(
            context,
            port=args.rtu,
            baudrate=args.baud,
            parity=parity,
            stopbits=args.stopbits,
            bytesize=8,
            ignore_missing_slaves=True,
        )
    await server.serve_forever(background=True)
    if server.transport is None:
        raise SystemExit(f"cannot listen on {args.tcp or args.rtu}")
    print("ready", flush=True)
    try:
        await asyncio.sleep(args.duration)
    finally:
        await server.shutdown()


def main() -> int:
    args = parse_args(sys.argv[1:])
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
