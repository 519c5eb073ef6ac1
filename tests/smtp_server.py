#!/usr/bin/python3
"""Scriptable SMTP server for mailctl's integration tests.

Runs under the Debian interpreter (/usr/bin/python3) because aiosmtpd comes from the
python3-aiosmtpd package. Started by tests/common/servers.rs, one instance per test.

    /usr/bin/python3 tests/smtp_server.py --port 0 --dir DIR [--rules FILE] [--auth USER:PASS]
        [--tls starttls|starttls-required|implicit --cert PEM --key PEM]
        [--no-pipelining] [--multiline-greeting]

--no-pipelining leaves PIPELINING out of the EHLO reply (a plain old server);
--multiline-greeting greets with a legal multi-line 220 reply (220-... 220-... 220 ...).

--tls starttls offers STARTTLS; starttls-required also refuses mail (530) before it;
implicit speaks TLS from the first byte (smtps). With --auth and STARTTLS, AUTH is accepted
only after STARTTLS.

DIR receives:
  <n>.eml      every accepted message, raw bytes as received (written to a temp file, then
               renamed, so a reader never sees half a message); n counts from 1
  log.jsonl    one line per accepted message: n, file, mail_from, rcpt_tos, reply, tls (the
               session's TLS version such as "TLSv1.3", or null on a plain session)
  events.jsonl one line per RCPT/DATA decision (accepted or not): stage, mail_from, rcpt(s),
               reply -- lets tests count attempts, including rejected ones
  port         the TCP port actually bound (written last, when the server accepts connections)

Rules (JSON, re-read at every MAIL FROM, i.e. once per transaction; missing file = accept all):
  {
    "rcpt": [
      {"match": "reject",   "reply": "550 5.1.1 User unknown"},
      {"match": "tempfail", "reply": "451 4.3.0 Try again later", "times": 1},
      {"match": "bounce",   "reply": "554 5.6.0 Content rejected", "stage": "data"},
      {"match": "cut",      "reply": "drop"}
    ],
    "delay_seconds": 0,
    "drop_connection": false,
    "rate_limit": {"per_second": 250, "burst": 25, "reply": "451 4.7.1 Rate limit exceeded"}
  }
  - "match" is a case-insensitive substring of the recipient address ("" matches everyone).
    The first matching rule that still applies decides the reply.
  - "times": N -> the rule answers only the first N attempts for a given address (counted in
    memory across connections), later attempts fall through to the next rule / acceptance.
  - "stage": "rcpt" (default) answers RCPT TO for that recipient; "data" lets RCPT pass and
    answers the DATA of any transaction that includes that recipient (message not stored).
  - "reply": "drop" closes the connection instead of replying.
  - "delay_seconds": sleep this long before answering DATA (slow server).
  - "drop_connection": false | "rcpt" | "data" | "after_data" (true means "data"):
      rcpt       close the connection instead of answering RCPT TO
      data       close it after the message body arrived, without storing the message
      after_data store the message, then close without replying (the ambiguous
                 "did it go out?" case)
  - "rate_limit": a token bucket shared by all connections, as hosted relays limit an
    account: "per_second" tokens a second, at most "burst" (default per_second / 10, at
    least 1) saved up; each MAIL FROM takes one, and without one gets "reply" (default
    "451 4.7.1 Rate limit exceeded"). "per_second": 0 throttles everything.
"""

import time

import argparse
import asyncio
import json
import os
import secrets
import ssl
import sys
import warnings
import logging

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

DEFAULT_RULES = {"rcpt": [], "delay_seconds": 0, "drop_connection": False}


def log_err(msg):
    print(f"smtp_server.py: {msg}", file=sys.stderr, flush=True)


def append_json(path, obj):
    # One short write per line in append mode; a single-threaded event loop means no
    # interleaving between connections.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


class Handler:
    def __init__(self, directory, rules_path):
        self.dir = directory
        self.rules_path = rules_path
        self.counter = 0
        # (rule match, reply, address) -> how many times that rule already fired
        self.fired = {}
        self.pipelining = True
        # rate_limit's token bucket: tokens saved up, and when they were counted
        self.tokens = None
        self.counted_at = time.monotonic()

    def take_token(self, limit):
        """Whether a MAIL FROM may go on under "rate_limit" (it takes a token if so)."""
        rate = float(limit.get("per_second", 0))
        default_burst = max(1.0, rate / 10) if rate > 0 else 0.0
        burst = float(limit.get("burst", default_burst))
        now = time.monotonic()
        if self.tokens is None:
            self.tokens = burst
        self.tokens = min(burst, self.tokens + (now - self.counted_at) * rate)
        self.counted_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    # -- rules -----------------------------------------------------------------

    def load_rules(self):
        if not self.rules_path or not os.path.exists(self.rules_path):
            return dict(DEFAULT_RULES)
        try:
            with open(self.rules_path, encoding="utf-8") as f:
                rules = json.load(f)
        except (OSError, ValueError) as e:
            # A broken rules file is a bug in the test: say so loudly, and make every
            # transaction fail visibly rather than silently accepting.
            log_err(f"cannot read rules file {self.rules_path}: {e}")
            return {"broken": str(e)}
        merged = dict(DEFAULT_RULES)
        merged.update(rules)
        return merged

    def decide(self, rules, address, stage):
        """Reply of the first applicable rule for this address at this stage, or None."""
        addr = address.lower()
        for rule in rules.get("rcpt", []):
            if rule.get("stage", "rcpt") != stage:
                continue
            if str(rule.get("match", "")).lower() not in addr:
                continue
            key = (rule.get("match", ""), rule.get("reply"), addr)
            times = rule.get("times")
            if times is not None and self.fired.get(key, 0) >= int(times):
                continue
            self.fired[key] = self.fired.get(key, 0) + 1
            return rule.get("reply", "550 5.7.1 Rejected by test rule")
        return None

    @staticmethod
    def drop_mode(rules):
        mode = rules.get("drop_connection", False)
        return "data" if mode is True else (mode or None)

    async def drop(self, server):
        # abort() makes aiosmtpd's connection_lost() cancel the session task, which is
        # then waiting right here: no reply ever goes out.
        server.transport.abort()
        await asyncio.sleep(3600)

    # -- SMTP hooks ------------------------------------------------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # PIPELINING (RFC 2920): aiosmtpd reads one command line at a time and answers in
        # order, so it serves pipelined commands; mailctl then uses its own pipelining client
        # on plain connections (lettre's on STARTTLS and AUTH ones).
        session.host_name = hostname
        if not self.pipelining:
            return responses
        return responses[:-1] + ["250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        rules = self.load_rules()
        if "broken" in rules:
            return "451 4.3.0 test server: broken rules file"
        limit = rules.get("rate_limit")
        if limit and not self.take_token(limit):
            reply = limit.get("reply", "451 4.7.1 Rate limit exceeded")
            append_json(self.events_path, {"stage": "mail", "mail_from": address, "reply": reply})
            return reply
        envelope.test_rules = rules
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        rules = getattr(envelope, "test_rules", None) or self.load_rules()
        event = {"stage": "rcpt", "mail_from": envelope.mail_from, "rcpt": address}
        if self.drop_mode(rules) == "rcpt":
            append_json(self.events_path, {**event, "reply": "drop"})
            await self.drop(server)
        reply = self.decide(rules, address, "rcpt")
        append_json(self.events_path, {**event, "reply": reply or "250 2.1.5 Ok"})
        if reply == "drop":
            await self.drop(server)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        rules = getattr(envelope, "test_rules", None) or self.load_rules()
        event = {"stage": "data", "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}
        delay = float(rules.get("delay_seconds") or 0)
        if delay > 0:
            await asyncio.sleep(delay)
        mode = self.drop_mode(rules)
        if mode == "data":
            append_json(self.events_path, {**event, "reply": "drop"})
            await self.drop(server)
        for rcpt in envelope.rcpt_tos:
            reply = self.decide(rules, rcpt, "data")
            if reply is not None:
                append_json(self.events_path, {**event, "reply": reply})
                if reply == "drop":
                    await self.drop(server)
                return reply

        self.counter += 1
        n = self.counter
        queue_id = secrets.token_hex(5).upper()
        reply = f"250 2.0.0 Ok: queued as {queue_id}"
        name = f"{n}.eml"
        tmp = os.path.join(self.dir, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(self.dir, name))
        if mode == "after_data":
            reply = "drop"
        append_json(
            self.log_path,
            {"n": n, "file": name, "mail_from": envelope.mail_from,
             "rcpt_tos": envelope.rcpt_tos, "reply": reply, "tls": tls_version(server)},
        )
        append_json(self.events_path, {**event, "reply": reply})
        if mode == "after_data":
            await self.drop(server)
        return reply

    @property
    def log_path(self):
        return os.path.join(self.dir, "log.jsonl")

    @property
    def events_path(self):
        return os.path.join(self.dir, "events.jsonl")


def tls_version(server):
    # After STARTTLS, aiosmtpd swaps server.transport for the TLS one; with implicit TLS it is
    # TLS from the start. Either way the transport knows its ssl object.
    ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
    return ssl_object.version() if ssl_object else None


class MultilineGreetingSMTP(SMTP):
    """Greets with a multi-line 220 reply, which RFC 5321 allows and some relays send."""

    greeted = False

    async def push(self, status):
        if not self.greeted and str(status).startswith("220 "):
            self.greeted = True
            await super().push("220-mailctl-test-smtp ESMTP")
            await super().push("220-this greeting has three lines")
        await super().push(status)


def make_authenticator(user, password):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode() == user
              and auth_data.password.decode() == password)
        # handled=False: let aiosmtpd send the standard 535 reply on failure.
        return AuthResult(success=ok, handled=False)
    return authenticator


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--dir", required=True)
    p.add_argument("--rules", default=None)
    p.add_argument("--auth", default=None, help="USER:PASS to require AUTH PLAIN/LOGIN")
    p.add_argument("--tls", choices=["starttls", "starttls-required", "implicit"], default=None)
    p.add_argument("--cert", default=None, help="server certificate (PEM), with --tls")
    p.add_argument("--key", default=None, help="its private key (PEM), with --tls")
    p.add_argument("--no-pipelining", action="store_true", help="do not offer PIPELINING")
    p.add_argument("--multiline-greeting", action="store_true", help="greet with three lines")
    args = p.parse_args()
    if args.tls and not (args.cert and args.key):
        p.error("--tls needs --cert and --key")

    os.makedirs(args.dir, exist_ok=True)
    handler = Handler(args.dir, args.rules)
    handler.pipelining = not args.no_pipelining
    server_class = MultilineGreetingSMTP if args.multiline_greeting else SMTP
    smtp_kwargs = {
        "hostname": "mailctl-test-smtp",  # avoids a slow getfqdn() per connection
        "enable_SMTPUTF8": True,
        "decode_data": False,
    }
    ssl_context = None
    if args.tls:
        # Server side: no client certificates asked (aiosmtpd warns otherwise).
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.cert, args.key)
    starttls = args.tls in ("starttls", "starttls-required")
    if starttls:
        smtp_kwargs.update(
            tls_context=ssl_context, require_starttls=args.tls == "starttls-required"
        )
    if args.auth:
        if not starttls:
            # Plain-text AUTH (or AUTH inside implicit TLS, which aiosmtpd cannot tell from
            # plain text) is what we want here; silence aiosmtpd's warning about it.
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            logging.getLogger("mail.log").setLevel(logging.ERROR)
        user, _, password = args.auth.partition(":")
        smtp_kwargs.update(
            authenticator=make_authenticator(user, password),
            # With STARTTLS on offer, credentials on a plain session are refused (538).
            auth_require_tls=starttls,
            auth_required=True,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: server_class(handler, loop=loop, **smtp_kwargs),
        host=args.host,
        port=args.port,
        ssl=ssl_context if args.tls == "implicit" else None,
    )
    port = server.sockets[0].getsockname()[1]
    # Announce readiness: the harness waits for this file, then for the 220 greeting.
    tmp = os.path.join(args.dir, ".port.tmp")
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, os.path.join(args.dir, "port"))
    log_err(f"listening on {args.host}:{port}, storing messages in {args.dir}")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
