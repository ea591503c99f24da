"""An OPC UA server usan did not write (asyncua), with a small simulated pump.

    python opcua_server.py PORT

Namespace 2 (urn:usan:test) holds, as string node ids:
  Pump1.Temperature  Double   20 + 0.1*k, k counting up every 100 ms from start
  Pump1.Pressure     Float    k
  Pump1.Running      Boolean  true
  Pump1.Mode         String   "auto"           (not a number: usan counts it)
  Pump1.Flow         Double   status BadSensorFailure, no value
Security None, anonymous.
"""
import asyncio
import logging
import sys

from asyncua import Server, ua

logging.disable(logging.WARNING)


async def main(port):
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:usan:test")
    pump = await server.nodes.objects.add_object(ua.NodeId("Pump1", idx), "Pump1")
    temp = await pump.add_variable(ua.NodeId("Pump1.Temperature", idx), "Temperature", 20.0, ua.VariantType.Double)
    pressure = await pump.add_variable(ua.NodeId("Pump1.Pressure", idx), "Pressure", 0.0, ua.VariantType.Float)
    await pump.add_variable(ua.NodeId("Pump1.Running", idx), "Running", True, ua.VariantType.Boolean)
    await pump.add_variable(ua.NodeId("Pump1.Mode", idx), "Mode", "auto", ua.VariantType.String)
    flow = await pump.add_variable(ua.NodeId("Pump1.Flow", idx), "Flow", 0.0, ua.VariantType.Double)
    await flow.write_value(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))
    async with server:
        print("serving", flush=True)
        k = 0
        while True:
            await temp.write_value(20.0 + 0.1 * k)
            await pressure.write_value(ua.Variant(float(k), ua.VariantType.Float))
            k += 1
            await asyncio.sleep(0.1)


asyncio.run(main(int(sys.argv[1])))
