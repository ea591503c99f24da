"""A Modbus TCP device usan did not write (pymodbus).

    python modbus_server.py PORT

Holding registers (0-based protocol addresses):
  0      int16   -5            (0xFFFB)
  1      uint16  1234
  2-3    float32 123.456       word order big    (0x42F6 0xE979)
  4-5    float32 123.456       word order little (0xE979 0x42F6)
  6-7    int32   -100000       (0xFFFE 0x7960)
  8-11   float64 pi            (0x4009 0x21FB 0x5444 0x2D18)
  12-13  uint32  70000         word order little (0x1170 0x0001)
  14-15  float32 NaN           (0x7FC0 0x0000)
Input register 0: 777. Coils 0-2: on, off, on. Discrete input 0: on.
Nothing else exists: reading it gets exception 2 (illegal data address).
"""
import logging
import sys

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartTcpServer

logging.disable(logging.WARNING)
holding = [0xFFFB, 1234, 0x42F6, 0xE979, 0xE979, 0x42F6, 0xFFFE, 0x7960,
           0x4009, 0x21FB, 0x5444, 0x2D18, 0x1170, 0x0001, 0x7FC0, 0x0000]
# Blocks start at 1: protocol address 0 is the first value.
device = ModbusDeviceContext(
    hr=ModbusSequentialDataBlock(1, holding),
    ir=ModbusSequentialDataBlock(1, [777]),
    co=ModbusSequentialDataBlock(1, [True, False, True]),
    di=ModbusSequentialDataBlock(1, [True]),
)
print("serving", flush=True)
StartTcpServer(ModbusServerContext(devices=device, single=True), address=("127.0.0.1", int(sys.argv[1])))
