"""Automatic conversion of granted tickets (chapter 4 section 4.4.1-4.4.4), through the engine's
grant path (engine/conversion.py) on a real store, with injected clocks."""

import pytest

from capwarden.credentials.issue import sign_revocation
from capwarden.errors import CapError, UsageError
from convrig import HOUR, Converter, Rig, descriptor_cred, run, settle, ticket_cred

DAY = 86400


@pytest.fixture
def rig(tmp_path):
    return Rig(str(tmp_path))


async def granted_ticket(rig, **kw):
    token, jti = rig.ticket(**kw)
    r = await rig.ask(ticket_cred(token))
    assert r["result"] == "granted", r
    await rig.engine.conversion.settle()
    return token, jti, r


def test_a_granted_convertible_ticket_is_converted_to_a_local_descriptor_named_by_its_jti(rig):
    async def scenario():
        token, jti, r = await granted_ticket(rig, seconds=3 * HOUR)
        assert rig.t.stored_ids() == [jti]
        d = rig.t.load_descriptor(jti)
        # 4.4.2 field mapping, validity bound, metadata; 4.4.3 the local key and issuer.
        assert d.credential_id == jti
        assert d.issuer_id == "local-conversion:" + rig.tid
        assert d.key_id == rig.t.conversion_key.key_id
        assert d.subject == rig.fay and d.terminal_id == rig.tid
        assert d.not_after == rig.wall + 3 * HOUR
        assert [g.to_obj() for g in d.grants] == rig.grants()
        md = d.metadata
        assert (md["origin"], md["origin_jti"], md["origin_iss"], md["origin_kid"]) == \
            ("converted_from_ticket", jti, "tickets:acme", "tix-1")
        assert rig.t.keys.records[d.key_id]["source"] == "pre-installed"
        (entry,) = rig.actions("convert")
        assert (entry["outcome"], entry["ticket"], entry["descriptor"]) == ("done", jti, jti)
        # The Fay goes on with descriptor_ref = jti, also when the terminal is offline.
        rig.authorizer.terminal.validator.degraded = True
        assert (await rig.ask(ticket_cred(token)))["error_code"] == "E_TICKET_OFFLINE_REJECTED"
        again = await rig.ask(descriptor_cred(jti))
        assert again["result"] == "granted" and again["granted_modes"] == ["read"]

    run(scenario())


def test_a_seven_day_ticket_keeps_its_expiry_never_more(rig):
    async def scenario():
        _token, jti, _r = await granted_ticket(rig, seconds=7 * DAY - 60)     # exp - nbf = 7 days
        d = rig.t.load_descriptor(jti)
        assert d.not_after == rig.wall + 7 * DAY - 60
        assert d.not_after <= rig.wall + 7 * DAY

    run(scenario())


@pytest.mark.parametrize("seconds, converted", [(HOUR, False), (HOUR + 1, True), (60, False)])
def test_only_a_ticket_whose_expiry_is_more_than_an_hour_away_is_converted(rig, seconds, converted):
    async def scenario():
        _token, jti, _r = await granted_ticket(rig, seconds=seconds)
        assert (jti in rig.t.stored_ids()) is converted
        assert len(rig.actions("convert")) == int(converted)

    run(scenario())


def test_the_hour_is_configurable(tmp_path):
    rig = Rig(str(tmp_path), converter=Converter(min_remaining_s=60))

    async def scenario():
        _t, short, _r = await granted_ticket(rig, seconds=61)
        _t, shorter, _r = await granted_ticket(rig, seconds=60)
        assert short in rig.t.stored_ids() and shorter not in rig.t.stored_ids()

    run(scenario())


def test_no_conversion_when_the_policy_does_not_permit_offline_access(tmp_path):
    rig = Rig(str(tmp_path), converter=Converter(enabled=False))

    async def scenario():
        _t, jti, _r = await granted_ticket(rig)
        assert jti not in rig.t.stored_ids() and not rig.actions("convert")

    run(scenario())


def test_a_ticket_not_convertible_denied_or_a_descriptor_is_not_converted(rig):
    async def scenario():
        _t, jti, _r = await granted_ticket(rig, convertible=False)
        assert jti not in rig.t.stored_ids()
        token, other = rig.ticket(grants=rig.grants("motor_left", ("write",)))
        assert (await rig.ask(ticket_cred(token)))["result"] == "denied"     # no grant for gps
        await rig.engine.conversion.settle()
        assert other not in rig.t.stored_ids()
        did = rig.descriptor()
        assert (await rig.ask(descriptor_cred(did)))["result"] == "granted"
        await rig.engine.conversion.settle()
        assert not rig.actions("convert")

    run(scenario())


def test_a_ticket_is_converted_once(rig, monkeypatch):
    calls = []
    real = rig.t.__class__.convert_verified

    def counting(self, t, now):
        calls.append(t.credential_id)
        return real(self, t, now)

    monkeypatch.setattr(rig.t.__class__, "convert_verified", counting)

    async def scenario():
        token, jti, _r = await granted_ticket(rig)
        for _ in range(3):
            assert (await rig.ask(ticket_cred(token)))["result"] == "granted"
        await rig.engine.conversion.settle()
        assert calls == [jti]
        assert list(rig.t.conversions()) == [jti]
        # A restarted engine (memo empty) finds the store's conversion and makes no second one.
        rig.engine.conversion = Converter()
        assert (await rig.ask(ticket_cred(token)))["result"] == "granted"
        await rig.engine.conversion.settle()
        assert list(rig.t.conversions()) == [jti] and rig.actions("convert")[-1]["outcome"] == "done"

    run(scenario())


def test_no_conversion_while_degraded_audited_as_skipped(rig):
    async def scenario():
        t = rig.authorizer.terminal
        token, jti = rig.ticket()
        granted = t.validator.check_ticket(token, rig.fay, rig.res(), "read", rig.wall)
        assert granted.granted
        t.validator.degraded = True
        assert (await rig.ask(ticket_cred(token)))["error_code"] == "E_TICKET_OFFLINE_REJECTED"
        await rig.engine.conversion.settle()
        assert jti not in t.stored_ids() and not rig.actions("convert")
        # A ticket granted while degraded (offline acceptance) is not converted: the credential
        # layer refuses, and the refusal is audited.
        assert rig.engine.conversion.after_grant(rig.engine, granted) is not None
        await rig.engine.conversion.settle()
        assert jti not in t.stored_ids()
        (entry,) = rig.actions("convert")
        assert (entry["outcome"], entry["reason"], entry["ticket"]) == ("skipped", "E_TICKET_OFFLINE_REJECTED", jti)

    run(scenario())


def test_a_ticket_granted_while_degraded_with_offline_acceptance_is_not_converted(rig):
    """Offline acceptance lets tickets through while degraded (the validator does not refuse
    them): the mode notice tells the converter, which converts none of them, audited."""
    from capwarden.engine import modepush

    async def scenario():
        modepush.notify_mode(rig.engine, False, "unreachable")
        token, jti, _r = await granted_ticket(rig)
        assert jti not in rig.t.stored_ids()
        (entry,) = rig.actions("convert")
        assert (entry["outcome"], entry["reason"], entry["ticket"]) == ("skipped", "offline", jti)
        modepush.notify_mode(rig.engine, True, "recovered")
        assert (await rig.ask(ticket_cred(token)))["result"] == "granted"
        await rig.engine.conversion.settle()
        assert jti in rig.t.stored_ids()

    run(scenario())


def test_revoking_the_origin_ticket_deletes_its_descriptor_and_ends_the_session(rig):
    async def scenario():
        token, jti, _r = await granted_ticket(rig)
        rig.authorizer.terminal.validator.degraded = True
        r = await rig.ask(descriptor_cred(jti))
        s = rig.engine.sessions[r["session_id"]]
        # As the online side's sync does: into the engine's own terminal (its listener deletes).
        rig.authorizer.terminal.import_revocation(sign_revocation(rig.tix, jti, rig.wall), rig.wall)
        assert jti not in rig.authorizer.terminal.stored_ids()
        assert jti not in rig.authorizer.terminal.conversions()
        await rig.engine.sweep()
        assert s.state == "terminated"
        await settle()
        ends = [m["body"] for m in rig.pushes if m["body"].get("session_id") == s.session_id
                and m["body"]["state"] == "terminated"]
        assert ends and ends[-1]["reason"] == "revoked"
        assert (await rig.ask(descriptor_cred(jti)))["error_code"] == "E_DESCRIPTOR_NOT_FOUND"

    run(scenario())


def test_a_revocation_imported_by_another_process_deletes_it_too(rig):
    async def scenario():
        _token, jti, _r = await granted_ticket(rig)
        r = await rig.ask(descriptor_cred(jti))
        s = rig.engine.sessions[r["session_id"]]
        rig.t.import_revocation(sign_revocation(rig.tix, jti, rig.wall), rig.wall)   # capwarden revocations import
        assert jti not in rig.t.stored_ids()
        await rig.engine.sweep()                 # the engine picks the store's change up
        assert s.state == "terminated"
        assert (await rig.ask(descriptor_cred(jti)))["result"] == "denied"

    run(scenario())


def test_a_revocation_that_lands_before_the_conversion_is_stored_wins(rig):
    """The revocation check is under the store's lock: a ticket revoked after its grant but
    before its conversion ran is not converted (the listener had nothing to delete)."""
    async def scenario():
        token, jti = rig.ticket()
        d = rig.t.validator.check_ticket(token, rig.fay, rig.res(), "read", rig.wall)
        assert d.granted
        rig.t.import_revocation(sign_revocation(rig.tix, jti, rig.wall), rig.wall)
        with pytest.raises(CapError) as exc:
            rig.t.convert_verified(d.credential, rig.wall)
        assert exc.value.code == "E_TICKET_REVOKED"
        assert jti not in rig.t.stored_ids()

    run(scenario())


def test_a_converted_descriptor_is_purged_24_hours_after_it_expires(rig):
    async def scenario():
        _t, jti, _r = await granted_ticket(rig, seconds=2 * HOUR)
        not_after = rig.t.load_descriptor(jti).not_after
        rig.wall = not_after + DAY - 1
        await rig.engine.sweep()
        assert jti in rig.authorizer.terminal.stored_ids()
        rig.wall = not_after + DAY + 60          # the sweep purges once a minute at most
        await rig.engine.sweep()
        assert jti not in rig.authorizer.terminal.stored_ids()
        assert jti not in rig.authorizer.terminal.conversions()

    run(scenario())


def test_the_config_object():
    c = Converter.from_config({"enabled": False, "min_remaining_s": 120})
    assert (c.enabled, c.min_remaining_s) == (False, 120)
    d = Converter.from_config(None)
    assert (d.enabled, d.min_remaining_s) == (True, HOUR)
    for bad in ({"enabled": "yes"}, {"min_remaining_s": -1}, {"min_remaining_s": 1.5}, {"other": 1}, []):
        with pytest.raises(UsageError):
            Converter.from_config(bad)


def test_the_engine_config_file_carries_the_conversion_section(tmp_path):
    import json
    import os

    from capwarden.engine import config

    path = str(tmp_path / "engine.json")
    with open(path, "w") as f:
        json.dump({"conversion": {"min_remaining_s": 7200}}, f)
    os.chmod(path, 0o600)
    conf = config.load(path)
    assert (conf.conversion.enabled, conf.conversion.min_remaining_s) == (True, 7200)
    with open(path, "w") as f:
        json.dump({"conversion": {"enabled": 1}}, f)
    with pytest.raises(UsageError) as exc:
        config.load(path)
    assert "conversion" in str(exc.value)
    assert config.empty().conversion is None


def test_a_ticket_refused_by_the_board_is_not_converted(rig, monkeypatch):
    # Only a grant that became final converts (4.4.1): the credential was valid, but the board
    # refused the lock (busy), so no local descriptor may outlive the refused request.
    from capwarden.errors import DeviceError

    async def busy(res, modes, session, lease_ms, wait_ms=0):
        raise DeviceError("E_RESOURCE_BUSY", "held by another session")

    monkeypatch.setattr(rig.engine.registry.boards["sim"].board, "acquire", busy)

    async def scenario():
        token, jti = rig.ticket(seconds=3 * HOUR)
        assert (await rig.ask(ticket_cred(token)))["result"] == "denied"
        await rig.engine.conversion.settle()
        assert jti not in rig.t.stored_ids() and not rig.actions("convert")

    run(scenario())
