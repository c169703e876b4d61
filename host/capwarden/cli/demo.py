"""`capwarden demo`: the main job on the virtual board, narrated for a newcomer."""

import argparse
import asyncio
import contextlib
import os
import shutil
import tempfile
import time

from capwarden.cli._common import heap_size

HELP = """\
Run the demonstration on the virtual board, end to end: real MicroPython on a pseudo-terminal
with the agent deployed by mpremote, the Protocol_Engine in front of it over an authenticated
link, a trust service on SQLite, and two agent runtimes talking to the engine over WebSocket.
The board's link key is replaced by a rekey; an issuer grants rights; two Fays read the GPS at
once; one is refused a motor held by the other; a stranger's forged frames are refused and
counted by the board; a handover moves the camera; a priority policy preempts a holder; a
ticket from the trust service's Ticket_Issuer is revoked there and the engine ends its session
at its next poll; a revocation ends a session; an operator takes a motor from a Fay and hands
it back; a runtime crash ends its sessions by timeout while the motors go to their safe state.
Everything runs in a temporary folder that is removed afterwards (--keep to keep it).
"""


def register(sub):
    p = sub.add_parser("demo", help="run the demonstration on the virtual board", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heapsize", type=heap_size, default=None,
                   help="virtual board heap, e.g. 64K, 256K (default: the smallest board's, 64K)")
    p.add_argument("--keep", action="store_true", help="keep the demo's store and audit log")
    p.set_defaults(func=main)


_steps = [0]


def step(text):
    _steps[0] += 1
    print("\n== %d. %s" % (_steps[0], text), flush=True)


def say(text):
    print("   " + text, flush=True)


async def scenario(folder, heapsize):
    from capwarden.cli import demo_control, demo_link, demo_trust
    from capwarden.credentials import Terminal
    from capwarden.credentials.ids import new_fay_id
    from capwarden.credentials.issue import SigningKey, descriptor_payload, sign_descriptor, sign_revocation
    from capwarden.engine.app import EngineApp
    from capwarden.engine.liveness import LivenessPolicy
    from capwarden.errors import CapError
    from capwarden.sdk import connect

    store = os.path.join(folder, "store")
    step("A terminal, an issuer, and two Fays")
    t = Terminal.init(store)
    now = int(time.time())
    issuer = SigningKey.generate("ed25519", "acme-2026", "issuer:acme")
    t.import_key(issuer.public_json(now - 60))
    ifay, cofay = new_fay_id(), new_fay_id()
    say("terminal %s" % t.terminal_id)
    say("iFay  %s (runtime rt-ifay)" % ifay)
    say("coFay %s (runtime rt-cofay)" % cofay)

    def grant(name, *modes):
        return {"resource_pattern": t.terminal_id + "/sim/" + name, "modes": list(modes)}

    def issue(fay, grants):
        data = sign_descriptor(issuer, descriptor_payload(fay, t.terminal_id, grants, "issuer:acme", now - 60,
                                                          now + 30 * 86400))
        return t.import_descriptor(data)

    step("The issuer grants the iFay camera and motor rights (signed descriptors, stored sealed)")
    d_ifay = issue(ifay, [grant("camera", "read", "execute"), grant("motor_left", "read", "write"),
                          grant("motor_right", "read", "write"), grant("gps", "read")])
    d_cofay = issue(cofay, [grant("gps", "read"), grant("motor_left", "write"), grant("motor_right", "write"),
                            grant("camera", "execute")])
    say("iFay:  camera read+execute, motors read+write, gps read   -> descriptor %s" % d_ifay)
    say("coFay: gps read, motors write, camera execute             -> descriptor %s" % d_cofay)

    step("The virtual board boots (MicroPython, deployed with mpremote) with a link key of its own")
    vboard = await demo_link.boot_and_rekey(heapsize, lambda text: say(text.strip()))
    trust, app, beats, runtimes = None, None, [], []
    try:
        lacking = demo_trust.missing()
        step("A trust service for the fleet: Ticket_Issuer, revocations, Registration_Authority")
        if lacking:
            say("not in this install (pip install 'capwarden[trust]': %s missing); the steps that use it are left out"
                % ", ".join(lacking))
        else:
            trust = demo_trust.DemoTrustService(folder)
            demo_trust.write_enrollment(store, await trust.start(t.terminal_id))
            say("capwarden trust init + serve: SQLite in the demo's folder, %s (loopback: plain HTTP), no broker"
                % trust.url)
            say("key set %d published; authorizer %r added; the terminal enrolled (a one-time secret)"
                % (trust.keyset, demo_trust.AUTHORIZER))

        step("The engine starts in front of the board: every frame between them authenticated")
        tokens = {"rt-ifay": "demo-token-ifay", "rt-cofay": "demo-token-cofay"}
        with_policy = demo_control.policy_available()
        app = EngineApp(store, "127.0.0.1:0", tokens, ports=[vboard.port],
                        fay_bindings={"rt-ifay": {ifay}, "rt-cofay": {cofay}},
                        liveness=LivenessPolicy({"motor": (300, 1500)}, default=(500, 2500)),
                        trust=demo_trust.settings(trust.url) if trust else None,
                        handover=demo_control.handover_settings(ifay, cofay) if with_policy else None,
                        console="127.0.0.1:0" if demo_control.console_available() else None)
        await app.start()
        board = app.boards["sim"]
        ping = await board.ping()
        say("runtime API at %s" % app.server.url)
        say("board %r, agent %s, boot id %08x, heap %d bytes free; resources: %s" % (
            board.info.name, board.info.agent_version, board.info.boot_id, ping["mem_free"],
            ", ".join(r.name for r in board.info.resources)))
        if app.console_server is not None:
            await demo_control.show_console(app.console_server.url)
        else:
            say("operator console: not in this install (it needs the 'trust' extra's starlette and uvicorn, and "
                "its pages); left out")
        if trust:
            await demo_trust.wait_for("registration with the trust service", lambda: app.online.mode == "online")
            say("the engine starts degraded (tickets refused, as its log says) until its first sync; then it "
                "registered: %s" % demo_trust.describe(app.online))
        res = lambda name: app.resource_id("sim", name)  # noqa: E731
        cred = lambda did: {"type": "descriptor_ref", "descriptor_id": did}  # noqa: E731
        ifay_rt = await connect(app.server.url, "rt-ifay", tokens["rt-ifay"])
        runtimes.append(ifay_rt)
        cofay_rt = await connect(app.server.url, "rt-cofay", tokens["rt-cofay"])
        runtimes.append(cofay_rt)

        async def keep_alive(sessions, stop):
            while not stop.is_set():
                for s in list(sessions):
                    if s.state == "active":
                        await s.heartbeat()
                await asyncio.sleep(0.25)

        ifay_sessions, cofay_sessions = [], []
        stop_ifay, stop_cofay = asyncio.Event(), asyncio.Event()
        beats += [asyncio.ensure_future(keep_alive(ifay_sessions, stop_ifay)),
                  asyncio.ensure_future(keep_alive(cofay_sessions, stop_cofay))]

        step("Both Fays read the GPS at once (read is shared)")
        g1 = await ifay_rt.acquire(ifay, res("gps"), "read", cred(d_ifay))
        g2 = await cofay_rt.acquire(cofay, res("gps"), "read", cred(d_cofay))
        ifay_sessions.append(g1)
        cofay_sessions.append(g2)
        fix1, fix2 = await g1.command(1), await g2.command(1)
        say("iFay  session %s reads lat %.7f" % (g1.session_id[:13], int.from_bytes(fix1[:4], "little") / 1e7))
        say("coFay session %s reads lat %.7f" % (g2.session_id[:13], int.from_bytes(fix2[:4], "little") / 1e7))

        step("The iFay drives motor_left; the coFay is refused it (write is exclusive)")
        m = await ifay_rt.acquire(ifay, res("motor_left"), "write", cred(d_ifay))
        ifay_sessions.append(m)
        await m.command(1, (650).to_bytes(2, "little", signed=True))
        say("iFay set motor_left to 650")
        try:
            await cofay_rt.acquire(cofay, res("motor_left"), "write", cred(d_cofay))
        except CapError as exc:
            say("coFay refused: %s: %s" % (exc.code, exc.message))

        step("A stranger on the line cannot take the motor: the board obeys only its engine")
        await demo_link.stranger(vboard, board, "motor_left")

        step("A handover moves the camera from the iFay to the coFay, with the iFay's consent")
        cam = await ifay_rt.acquire(ifay, res("camera"), "execute", cred(d_ifay))
        ifay_sessions.append(cam)

        def consent(offer):
            say("iFay is offered a handover of %s to the coFay: consents" % offer["resource_id"].split("/")[-1])
            return True

        ifay_rt.on_offer(consent)
        r = await cofay_rt.handover(res("camera"), cofay, "execute", cred(d_cofay), timeout_ms=5000)
        cofay_sessions.append(r["session"])
        await asyncio.sleep(0.2)
        say("handover %s: the coFay now holds the camera (session %s); the iFay's camera session is %s" % (
            r["result"], r["session"].session_id[:13], cam.state))
        held = await board.grants(board.resource_index("camera"))
        say("on the board the grant moved in one operation, under a new epoch: %s" % (
            "; ".join("board session %d, epoch %d" % (sid, epoch) for sid, epoch, _modes in held) or "none",))

        step("A priority policy decides who drives motor_right: the higher score preempts the holder")
        if with_policy:
            await demo_control.priority(ifay_rt, cofay_rt, ifay, cofay, res, cred(d_ifay), cred(d_cofay),
                                        ifay_sessions, cofay_sessions)
        else:
            say("not in this install (the rules are CEL: pip install common-expression-language); left out")

        if trust:
            step("A ticket from the fleet's Ticket_Issuer, then revoked at the service: the engine hears by polling")
            await demo_trust.ticket_story(trust, app, ifay_rt, ifay, res("imu"), ifay_sessions)

            step("The network goes down: the terminal degrades, the Fay goes on offline, recovery catches up")
            await demo_trust.offline_story(trust, app, ifay_rt, ifay, res("led"), ifay_sessions)

        step("The issuer revokes the coFay's descriptor: its sessions end")
        rev = sign_revocation(issuer, d_cofay, int(time.time()), "no_longer_needed")
        Terminal.open(store).import_revocation(rev, int(time.time()))   # as `capwarden revocations import`
        say("revocation imported into the store; the engine picks it up on its next sweep")
        for s in cofay_sessions:
            await asyncio.wait_for(s.ended(), 10)
            say("coFay session %s on %s: %s (%s)" % (s.session_id[:13], s.resource_id.split("/")[-1], s.state,
                                                     s.changes[-1]["reason"]))

        step("An operator takes motor_left from the iFay at once, then hands it back")
        await demo_control.take_and_hand_back(app.engine, ifay_rt, ifay, res("motor_left"), cred(d_ifay),
                                              ifay_sessions)

        step("The iFay's runtime crashes: heartbeats stop and the connection drops")
        stop_ifay.set()
        ifay_rt.ws.transport.abort()
        t0 = time.monotonic()
        while any(s.runtime_id == "rt-ifay" for s in app.engine.sessions.values()) and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.1)
        say("%.1f s later the engine has ended all its sessions (AND rule: connection down and heartbeat timeout)"
            % (time.monotonic() - t0))
        check = await board.acquire(board.resource_index("motor_left"), 1, 999, 2000)
        speed = int.from_bytes(await board.actuate(check.res, 999, check.epoch, 2), "little", signed=True)
        await board.release(check.res, 999, check.epoch)
        say("motor_left speed is now %d: released and driven to its safe state" % speed)

        stop_cofay.set()
    finally:
        # Also when a step failed or Ctrl-C cancelled the story: the heartbeat loops and the
        # runtimes end here, before the engine, so none of them fails later unheard.
        for b in beats:
            b.cancel()
        await asyncio.gather(*beats, return_exceptions=True)
        for rt in runtimes:
            with contextlib.suppress(Exception):
                await rt.close()
        if app is not None:
            await app.stop()
        if trust is not None:
            await trust.stop()
        vboard.stop()

    step("The audit log: every decision, hash-chained")
    from capwarden.engine.audit import read

    entries, problem = read(app.audit_path)
    say("seq action           outcome    runtime        resource     reason or code")
    for e in entries:
        say("%3d %-16s %-10s %-14s %-12s %s" % (e["seq"], e["action"], e["outcome"], e.get("runtime", "-"),
                                             e.get("resource", "-").rsplit("/", 1)[-1], e.get("reason", "")))
    say("%d entries, chain %s (run with --keep, then: capwarden audit --store %s)" % (
        len(entries), "intact" if problem is None else problem, store))


def main(args):
    """Exit 0 when the whole story ran; 1 when a step failed (said in one line, never a
    traceback); 130 on Ctrl-C. The temporary folder goes in every case (unless --keep)."""
    from capwarden.errors import CapwardenError

    folder = tempfile.mkdtemp(prefix="capwarden-demo-")
    try:
        asyncio.run(scenario(folder, args.heapsize))
    except (OSError, asyncio.TimeoutError, ValueError) as exc:   # a step that did not go as told
        raise CapwardenError("the demo stopped: %s" % (str(exc) or exc.__class__.__name__)) from None
    finally:
        if args.keep:
            print("\nkept %s" % folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print("\nDone.")
    return 0
