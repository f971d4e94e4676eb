#!/usr/bin/python3
"""Drives Debian's headless Chromium for the dashboard's browser tests.

Reads a JSON list of steps on stdin and prints one JSON line per step, then a last line
{"console": [...], "exceptions": [...]} with the page's console errors and uncaught
exceptions. Steps:
  {"open": URL}                       navigate and wait for the load event
  {"wait": JS_EXPR, "timeout": S}     poll until the expression is truthy (default 20 s)
  {"eval": JS_EXPR}                   its JSON value (promises are awaited)
  {"click": CSS_SELECTOR}             click the first element it matches
  {"screenshot": PATH}                a PNG of the page
  {"back": true}                      history back
  {"newProfile": true}                a fresh browser (and profile): nothing of the last one
Exit status 0 only if every step passed and the page threw nothing; a failed step ends the
run. Chromium is spoken to over --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-terminated
JSON messages): no port, nothing but its process to clean up, which is killed by its pid and
its profile directory removed on every way out. Standard library only.
"""
import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BINARY = '/usr/bin/chromium-headless-shell'
# What BINARY runs: started directly, since Debian's wrapper script does not exec it (killing
# the wrapper would leave Chromium running).
REAL_BINARY = '/usr/lib/chromium/chromium-headless-shell'
CALL_TIMEOUT_S = 30


class StepFailed(Exception):
    pass


class Chromium:
    """One headless Chromium with its own profile and one page (a CDP session)."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix='nodemesh-chromium-')
        self.log = open(os.path.join(self.profile, 'chromium.log'), 'w+')
        self.proc = None
        to_read, to_write = os.pipe()
        from_read, from_write = os.pipe()

        def wire_pipes():
            # os.pipe() descriptors are close-on-exec, and dup2 onto the same number keeps
            # that flag: dup to fresh numbers first, then onto 3 and 4.
            commands, replies = os.dup(to_read), os.dup(from_write)
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        try:
            self.proc = subprocess.Popen(
                [REAL_BINARY if os.access(REAL_BINARY, os.X_OK) else BINARY, '--headless', '--no-sandbox', '--disable-gpu', '--remote-debugging-pipe',
                 '--no-first-run', '--no-default-browser-check', '--disable-extensions',
                 '--user-data-dir=' + self.profile, '--window-size=1280,800', 'about:blank'],
                preexec_fn=wire_pipes, stdin=subprocess.DEVNULL, stdout=self.log,
                stderr=self.log, close_fds=False, start_new_session=True)
        finally:
            os.close(to_read)
            os.close(from_write)
        self.commands = os.fdopen(to_write, 'wb', buffering=0)
        self.replies = from_read
        self.pending = b''
        self.next_id = 0
        self.console = []
        self.exceptions = []
        self.loaded = False
        target = self.call('Target.createTarget', url='about:blank')['targetId']
        self.session = self.call('Target.attachToTarget', targetId=target,
                                 flatten=True)['sessionId']
        for domain in ('Runtime.enable', 'Page.enable', 'Log.enable'):
            self.call(domain, session=self.session)

    def _read_message(self, deadline):
        while b'\0' not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.replies], [], [], left)[0]:
                raise StepFailed('chromium did not answer in time')
            chunk = os.read(self.replies, 1 << 16)
            if not chunk:
                raise StepFailed('chromium closed its pipe: ' + self.log_tail())
            self.pending += chunk
        message, self.pending = self.pending.split(b'\0', 1)
        return json.loads(message)

    def _event(self, message):
        method = message.get('method')
        params = message.get('params', {})
        if method == 'Runtime.exceptionThrown':
            details = params.get('exceptionDetails', {})
            text = details.get('exception', {}).get('description') or details.get('text', '')
            self.exceptions.append(text)
        elif method == 'Runtime.consoleAPICalled' and params.get('type') in ('error', 'assert'):
            self.console.append(' '.join(
                str(a.get('value', a.get('description', ''))) for a in params.get('args', [])))
        elif method == 'Log.entryAdded' and params.get('entry', {}).get('level') == 'error':
            entry = params['entry']
            self.console.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())
        elif method == 'Page.loadEventFired':
            self.loaded = True

    def call(self, method, session=None, **params):
        self.next_id += 1
        message = {'id': self.next_id, 'method': method, 'params': params}
        if session:
            message['sessionId'] = session
        self.commands.write(json.dumps(message).encode() + b'\0')
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get('id') == self.next_id:
                if 'error' in reply:
                    raise StepFailed(f"{method}: {reply['error'].get('message')}")
                return reply['result']
            self._event(reply)

    def page(self, method, **params):
        return self.call(method, session=self.session, **params)

    def pump(self, seconds):
        """Reads events for up to `seconds` (load, console, exceptions)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            if b'\0' not in self.pending and not select.select([self.replies], [], [], left)[0]:
                return
            self._event(self._read_message(deadline + 1))

    def evaluate(self, expression):
        result = self.page('Runtime.evaluate', expression=expression, awaitPromise=True,
                           returnByValue=True)
        if 'exceptionDetails' in result:
            details = result['exceptionDetails']
            text = details.get('exception', {}).get('description') or details.get('text')
            raise StepFailed(f'{expression}: {text}')
        return result['result'].get('value')

    def log_tail(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-2000:]

    def close(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.call('Browser.close')
                self.proc.wait(5)
            except Exception:
                pass
        if self.proc and self.proc.poll() is None:
            # Its own process group (start_new_session): Chromium and its helpers, nothing else.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.commands.close()
        os.close(self.replies)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def run_step(browser, step):
    if 'open' in step:
        browser.loaded = False
        result = browser.page('Page.navigate', url=step['open'])
        if result.get('errorText'):
            raise StepFailed(f"{step['open']}: {result['errorText']}")
        if not result.get('loaderId'):
            return {'open': step['open']}  # the same document, another fragment: no load
        deadline = time.monotonic() + step.get('timeout', 20)
        while not browser.loaded:
            if time.monotonic() > deadline:
                raise StepFailed(f"{step['open']} did not load")
            browser.pump(0.1)
        return {'open': step['open']}
    if 'wait' in step:
        deadline = time.monotonic() + step.get('timeout', 20)
        # Truthy as JavaScript says: an element comes back by value as {}, falsy in Python.
        probe = f"(async () => {{ const v = await ({step['wait']}); return [!!v, v]; }})()"
        while True:
            truthy, value = browser.evaluate(probe)
            if truthy:
                return {'wait': step['wait'], 'value': value}
            if time.monotonic() > deadline:
                state = browser.evaluate(
                    "JSON.stringify({url: location.href, state: document.body && "
                    "document.body.dataset.state, text: document.body && "
                    "document.body.innerText.slice(0, 1500)})")
                raise StepFailed(f"timed out waiting for {step['wait']}: page {state}; "
                                 f"console {browser.console}; exceptions {browser.exceptions}")
            browser.pump(0.1)
    if 'eval' in step:
        return {'eval': step['eval'], 'value': browser.evaluate(step['eval'])}
    if 'click' in step:
        selector = json.dumps(step['click'])
        clicked = browser.evaluate(
            f"(() => {{ const e = document.querySelector({selector}); if (!e) return false; "
            f"e.scrollIntoView({{block: 'center'}}); "
            f"e.dispatchEvent(new MouseEvent('click', {{bubbles: true, cancelable: true, "
            f"view: window}})); return true; }})()")
        if not clicked:
            raise StepFailed(f"nothing matches {step['click']}")
        return {'click': step['click']}
    if 'screenshot' in step:
        path = step['screenshot']
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        data = browser.page('Page.captureScreenshot', format='png')['data']
        with open(path, 'wb') as out:
            out.write(base64.b64decode(data))
        return {'screenshot': path}
    if 'back' in step:
        browser.evaluate('history.back()')
        browser.pump(0.2)
        return {'back': True}
    raise StepFailed(f'unknown step {json.dumps(step)}')


def main():
    try:
        steps = json.load(sys.stdin)
    except ValueError as error:
        print(json.dumps({'error': f'the steps on stdin are not JSON: {error}'}))
        return 2
    if not os.access(BINARY, os.X_OK):
        print(json.dumps({'error': 'needs chromium-headless-shell: run bash test/install-deps.sh'}))
        return 2
    browser = None
    console, exceptions = [], []
    ok = True
    try:
        browser = Chromium()
        for step in steps:
            if step.get('newProfile'):
                console += browser.console
                exceptions += browser.exceptions
                browser.close()
                browser = Chromium()
                print(json.dumps({'newProfile': True}), flush=True)
                continue
            try:
                print(json.dumps({'ok': True, **run_step(browser, step)}), flush=True)
            except StepFailed as error:
                print(json.dumps({'ok': False, 'step': step, 'error': str(error)}), flush=True)
                ok = False
                break
        browser.pump(0.05)
    except (StepFailed, OSError) as error:
        print(json.dumps({'ok': False, 'error': f'chromium: {error}'}), flush=True)
        ok = False
    finally:
        if browser:
            console += browser.console
            exceptions += browser.exceptions
            browser.close()
    print(json.dumps({'console': console, 'exceptions': exceptions}), flush=True)
    return 0 if ok and not exceptions else 1


if __name__ == '__main__':
    sys.exit(main())
