"""snmpsim's command responder, run as whoever runs the tests.

Usage: snmpsim_responder.py [snmpsim-command-responder options]

snmpsim refuses to run as root unless it drops privileges to another user,
and that user could not read an interpreter installed under /root (where
CI's is). The simulator serves loopback test data only, so the privilege
drop is replaced with nothing; everything else is snmpsim's own code.

snmpsim 1.2.2 sets `--max-var-binds` on an attribute pysnmp does not read
(`maxVarBinds`; pysnmp's is `max_varbinds`), so a GETBULK response never
holds more than 64 varbinds; the option is applied here to the one pysnmp
reads.
"""

import sys

try:
    import snmpsim.daemon
    from snmpsim.commands.responder import main
except ImportError as error:
    print(
        f"snmpsim is not importable ({error}): pip install snmpsim==1.2.2 pysmi==1.6.3 cryptography",
        file=sys.stderr,
    )
    sys.exit(3)


class _StayAsYouAre:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


snmpsim.daemon.PrivilegesOf = _StayAsYouAre

for arg in sys.argv[1:]:
    if arg.startswith("--max-var-binds="):
        from pysnmp.entity.rfc3413 import cmdrsp

        cmdrsp.BulkCommandResponder.max_varbinds = int(arg.split("=", 1)[1])
sys.exit(main())
