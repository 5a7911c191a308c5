#!/usr/bin/env python3
"""An OPC UA server on loopback for the OPC UA poller's tests (asyncua).

    opcua_server.py [--port N] [--users USER:PASSWORD] [--bulk N]

Binds 127.0.0.1 (port 0 by default: the OS picks one) with security
policy None and prints `ready PORT NAMESPACE` once it listens. Namespace
urn:pattoo:test holds under Objects/Plant the nodes of the Python agent's
recorded run (SPEC-opcua-compat.md §6):

    ns=2;s=Temperature  Double 21.5
    ns=2;i=1001         Int32  7
    ns=2;s=Label        String "hello"
    ns=2;s=Running      Boolean true
    ns=2;s=NumText      String "42"
    ns=2;s=Big          UInt64 2**53 + 1

and one node of each other built-in type the poller converts or refuses
(ns=2;s=T.<Type>), plus nodes with a GUID and an opaque (ByteString) id.
--bulk N adds N Doubles ns=2;s=Bulk.0 .. Bulk.N-1 (the load harness).
--users USER:PASSWORD accepts only that user (anonymous is not offered).
--secure DIR offers only Basic256Sha256 Sign and SignAndEncrypt, with a
certificate made in DIR (server.der, server.pem); it also makes one for
the client there (client.der, client.pem, application URI
urn:pattoo-agentd), which it accepts like any client certificate.
"""
import argparse
import asyncio
import datetime
import uuid

from asyncua import Server, ua
from asyncua.server.user_managers import UserManager
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID
from pathlib import Path

GUID = uuid.UUID('09087e75-8e5e-499b-954f-f2a9603db28a')
OPAQUE = b'\x01\x02pattoo'


class OnlyUser(UserManager):
    def __init__(self, user, password):
        self.user, self.password = user, password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == self.user and password == self.password:
            return User(role=UserRole.User)
        return None


async def main(args):
    server = Server(
        user_manager=OnlyUser(*args.users.split(':', 1)) if args.users else None)
    await server.init()
    server.set_endpoint('opc.tcp://127.0.0.1:{}/'.format(args.port))
    if args.secure:
        out = Path(args.secure)
        for name, uri, use in [
                ('server', 'urn:pattoo:test:server', ExtendedKeyUsageOID.SERVER_AUTH),
                ('client', 'urn:pattoo-agentd', ExtendedKeyUsageOID.CLIENT_AUTH)]:
            await setup_self_signed_certificate(
                out / (name + '.pem'), out / (name + '.der'), uri, '127.0.0.1',
                [use], {'commonName': name})
        server.set_server_name('pattoo test server')
        await server.set_application_uri('urn:pattoo:test:server')
        await server.load_certificate(str(out / 'server.der'))
        await server.load_private_key(str(out / 'server.pem'))
        server.set_security_policy([
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if args.users:
        server.set_security_IDs(['Username'])
    idx = await server.register_namespace('urn:pattoo:test')
    plant = await server.nodes.objects.add_object(ua.NodeId('Plant', idx), 'Plant')

    async def var(node_id, name, value, varianttype=None):
        await plant.add_variable(ua.NodeId(node_id, idx), name, value,
                                 varianttype=varianttype)

    await var('Temperature', 'Temperature', 21.5)
    await var(1001, 'Counter', 7, ua.VariantType.Int32)
    await var('Label', 'Label', 'hello')
    await var('Running', 'Running', True)
    await var('NumText', 'NumText', '42')
    await var('Big', 'Big', 2**53 + 1, ua.VariantType.UInt64)
    V = ua.VariantType
    for name, value, vtype in [
            ('SByte', -8, V.SByte), ('Byte', 200, V.Byte),
            ('Int16', -1600, V.Int16), ('UInt16', 65535, V.UInt16),
            ('UInt32', 4294967295, V.UInt32),
            ('Int64', -2**63, V.Int64), ('Float', 21.3, V.Float),
            ('Double', -0.5, V.Double), ('Boolean', False, V.Boolean),
            ('String', 'text', V.String),
            ('LocalizedText', ua.LocalizedText('Open'), V.LocalizedText),
            ('DateTime', datetime.datetime(2020, 7, 4, tzinfo=datetime.timezone.utc), V.DateTime),
            ('ByteString', b'\x00\x01', V.ByteString),
            ('Array', [1, 2, 3], V.Int32)]:
        await var('T.' + name, name, value, vtype)
    await plant.add_variable(ua.NodeId(GUID, idx, ua.NodeIdType.Guid), 'ByGuid', 11,
                             varianttype=V.Int32)
    await plant.add_variable(ua.NodeId(OPAQUE, idx, ua.NodeIdType.ByteString), 'ByOpaque',
                             12, varianttype=V.Int32)
    for i in range(args.bulk):
        await var('Bulk.{}'.format(i), 'Bulk{}'.format(i), float(i))
    async with server:
        print('ready {} {}'.format(server.bserver.port, idx), flush=True)
        while True:
            await asyncio.sleep(3600)


parser = argparse.ArgumentParser()
parser.add_argument('--port', type=int, default=0)
parser.add_argument('--users')
parser.add_argument('--bulk', type=int, default=0)
parser.add_argument('--secure')
asyncio.run(main(parser.parse_args()))
