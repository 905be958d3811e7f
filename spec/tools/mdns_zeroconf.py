#!/usr/bin/python3
# spec/tools/mdns_zeroconf.py - python3-zeroconf on one interface, for the
# mDNS interop specs (test-only).
#   publish IFACE_IP NAME PORT ID SWARM   registers NAME._odo._tcp.local.
#                                         until killed; prints "PUBLISHED"
#   browse IFACE_IP ID                    browses _odo._tcp.local.; prints
#       "FOUND host port id swarm" when an instance with node id ID resolves
#       and "REMOVED name" when it leaves, then exits 0; exits 1 after 60 s
#   legacy IFACE_IP                       a legacy unicast query (RFC 6762
#       §6.7: from an ephemeral port, id 0x4242) for the service's PTRs;
#       prints "ANSWER from-ip id question name type ttl target" per record
#       of the first answer, exits 1 after 10 s without one
import socket
import sys
import threading
import time

from zeroconf import (DNSIncoming, DNSOutgoing, DNSQuestion, IPVersion, ServiceBrowser, ServiceInfo,
                      ServiceStateChange, Zeroconf)
from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_PTR

SERVICE = "_odo._tcp.local."


def say(line):
    print(line, flush=True)


def publish(iface, name, port, node_id, swarm):
    zc = Zeroconf(interfaces=[iface], ip_version=IPVersion.V4Only)
    info = ServiceInfo(SERVICE, f"{name}.{SERVICE}", addresses=[socket.inet_aton(iface)], port=int(port),
                       properties={"id": node_id, "swarm": swarm}, server=f"{name}-host.local.")
    zc.register_service(info)
    say("PUBLISHED")
    try:
        while True:
            time.sleep(1)
    finally:
        zc.unregister_service(info)
        zc.close()


def browse(iface, node_id):
    zc = Zeroconf(interfaces=[iface], ip_version=IPVersion.V4Only)
    done = threading.Event()
    mine = {}

    def changed(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Removed:
            if name in mine:
                say(f"REMOVED {name}")
                done.set()
            return
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        if not info:
            return
        props = {k.decode(): (v.decode() if v is not None else None) for k, v in info.properties.items()}
        if props.get("id") == node_id and name not in mine:
            mine[name] = True
            addrs = info.parsed_addresses()
            say(f"FOUND {addrs[0] if addrs else '?'} {info.port} {props.get('id')} {props.get('swarm')}")

    ServiceBrowser(zc, SERVICE, handlers=[changed])
    ok = done.wait(60)
    zc.close()
    sys.exit(0 if ok else 1)


def legacy(iface):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((iface, 0))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
    out = DNSOutgoing(_FLAGS_QR_QUERY, multicast=False, id_=0x4242)
    out.add_question(DNSQuestion(SERVICE, _TYPE_PTR, _CLASS_IN))
    deadline = time.time() + 10
    while time.time() < deadline:
        s.sendto(out.packets()[0], ("224.0.0.251", 5353))
        s.settimeout(1)
        try:
            data, (host, _) = s.recvfrom(9000)
        except socket.timeout:
            continue
        msg = DNSIncoming(data)
        q = msg.questions[0].name if msg.questions else "-"
        answers = msg.answers() if callable(msg.answers) else msg.answers
        for r in answers:
            say(f"ANSWER {host} {msg.id:#x} {q} {r.name} {r.type} {r.ttl} {getattr(r, 'alias', '-')}")
        sys.exit(0)
    sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "publish":
        publish(*sys.argv[2:7])
    elif sys.argv[1] == "legacy":
        legacy(sys.argv[2])
    else:
        browse(*sys.argv[2:4])
