"""An OPC UA server usan did not write (asyncua), with a small simulated pump.

    python opcua_server.py PORT [--secure DIR]

Namespace 2 (urn:usan:test) holds, as string node ids:
  Pump1                        Object
  Pump1.Temperature  Double    20 + 0.1*k, k counting up every 100 ms from start
  Pump1.Pressure     Float     k
  Pump1.Running      Boolean   true
  Pump1.Mode         String    "auto"           (not a number: usan counts it)
  Pump1.Flow         Double    status BadSensorFailure, no value
  Pump1.Motor                  Object
  Pump1.Motor.Current Double   5.0

Without --secure: security None, anonymous login.
With --secure DIR: only Basic256Sha256 with Sign or SignAndEncrypt, only the
user `operator` with password `s3cret`; the server's key and self-signed
certificate are made in DIR (server_key.pem, server_cert.der) when missing,
so a client can be told to trust exactly this server.
"""
import asyncio
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key, generate_self_signed_app_certificate
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

logging.disable(logging.WARNING)

SERVER_URI = "urn:usan:test:server"


class OneUser:
    """Lets in `operator` / `s3cret` and nobody else."""

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == "operator" and password == "s3cret":
            return User(role=UserRole.User)
        return None


async def main(port, secure_dir):
    server = Server(user_manager=OneUser() if secure_dir else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    if secure_dir:
        await server.set_application_uri(SERVER_URI)
        key, cert = secure_dir / "server_key.pem", secure_dir / "server_cert.der"
        if not cert.exists():
            private_key = generate_private_key()
            key.write_bytes(dump_private_key_as_pem(private_key))
            certificate = generate_self_signed_app_certificate(
                private_key, SERVER_URI, {},
                # The names a client checks against the endpoint's host.
                [x509.UniformResourceIdentifier(SERVER_URI), x509.DNSName(socket.gethostname()),
                 x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            )
            cert.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy([
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ])
        server.set_identity_tokens([ua.UserNameIdentityToken])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:usan:test")
    pump = await server.nodes.objects.add_object(ua.NodeId("Pump1", idx), "Pump1")
    temp = await pump.add_variable(ua.NodeId("Pump1.Temperature", idx), "Temperature", 20.0, ua.VariantType.Double)
    pressure = await pump.add_variable(ua.NodeId("Pump1.Pressure", idx), "Pressure", 0.0, ua.VariantType.Float)
    await pump.add_variable(ua.NodeId("Pump1.Running", idx), "Running", True, ua.VariantType.Boolean)
    await pump.add_variable(ua.NodeId("Pump1.Mode", idx), "Mode", "auto", ua.VariantType.String)
    flow = await pump.add_variable(ua.NodeId("Pump1.Flow", idx), "Flow", 0.0, ua.VariantType.Double)
    await flow.write_value(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))
    motor = await pump.add_object(ua.NodeId("Pump1.Motor", idx), "Motor")
    await motor.add_variable(ua.NodeId("Pump1.Motor.Current", idx), "Current", 5.0, ua.VariantType.Double)
    async with server:
        print("serving", flush=True)
        k = 0
        while True:
            await temp.write_value(20.0 + 0.1 * k)
            await pressure.write_value(ua.Variant(float(k), ua.VariantType.Float))
            k += 1
            await asyncio.sleep(0.1)


secure = Path(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--secure" else None
asyncio.run(main(int(sys.argv[1]), secure))
