// The live tap: meshctl tap's filters, its stream read line by line, one row per request
// (its req, rsp and end events folded into the row of their request id), newest first and at
// most MAX_ROWS of them. Pause keeps reading but stops drawing (up to MAX_ROWS events, then
// counts them as dropped); a pause longer than PAUSE_CLOSES_MS closes the stream to free the
// aggregator's slot, and resume opens it again.
(() => {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  const {el, format} = nm.table;

  const MAX_ROWS = 1000;
  const PAUSE_CLOSES_MS = 60000;
  // gRPC status names as meshctl tap prints them (cli/views/format.cc GrpcStatusName).
  const GRPC_STATUS = [
    'OK', 'Cancelled', 'Unknown', 'InvalidArgument', 'DeadlineExceeded', 'NotFound',
    'AlreadyExists', 'PermissionDenied', 'ResourceExhausted', 'FailedPrecondition', 'Aborted',
    'OutOfRange', 'Unimplemented', 'Internal', 'Unavailable', 'DataLoss', 'Unauthenticated',
  ];
  const grpcStatusName = (code) => GRPC_STATUS[code] || String(code);

  // "emojivoto/web-7d9f" for a pod, the address for a peer outside the inventory.
  function peer(identity, address) {
    if (identity && identity.pod && identity.ownerKind !== 'External') {
      return `${identity.namespace || ''}/${identity.pod}`;
    }
    return address || 'unknown';
  }

  // The tap view in `host` for `state`. hooks: error(ApiError) when the stream is refused
  // or fails, ready() once the stream is open. Returns close().
  function create(host, state, hooks) {
    const rows = new Map(); // request id -> {tr, cells}
    let older = 0; // rows dropped past MAX_ROWS
    let aggregatorDropped = 0;
    let pausedDropped = 0;
    let paused = false;
    let pausedAt = 0;
    let buffer = [];
    let close = null;
    let pauseTimer = null;

    const filters = filterForm(state);
    const pause = el('button', {type: 'button', 'data-tap-pause': ''}, 'Pause');
    const status = el('span', {class: 'tap-status', 'data-tap-status': ''});
    const drops = el('span', {class: 'tap-drops', 'data-tap-drops': ''});
    const head = el(
      'tr',
      {},
      ...['Time (UTC)', 'Dir', 'From', 'To', 'Method', 'Path', 'HTTP', 'gRPC', 'Latency', 'Duration'].map(
        (label, i) => el('th', {class: i >= 8 ? 'num' : null}, label)
      )
    );
    const body = el('tbody');
    const table = el('table', {class: 'data tap', 'data-tap': ''}, el('thead', {}, head), body);
    host.append(filters, el('div', {class: 'toolbar'}, pause, status, drops), table);

    const showDrops = () => {
      const parts = [];
      if (older) parts.push(`${older} older events not shown`);
      if (aggregatorDropped) parts.push(`the aggregator dropped ${aggregatorDropped}`);
      if (pausedDropped) parts.push(`${pausedDropped} dropped while paused`);
      drops.textContent = parts.join(' · ');
    };

    function draw(message) {
      if (message.drops) {
        aggregatorDropped +=
          Number(message.drops.agentDropped || 0) + Number(message.drops.streamDropped || 0);
        showDrops();
        return;
      }
      const event = message.event;
      if (!event) return;
      const id = event.requestId || '';
      let row = rows.get(id);
      if (!row) {
        const cells = Array.from({length: 10}, (_, i) => el('td', {class: i >= 8 ? 'num' : null}));
        row = {tr: el('tr', {'data-request-id': id}, ...cells), cells};
        rows.set(id, row);
        body.prepend(row.tr);
        row.cells[0].textContent = new Date(Number(event.unixMicros || 0) / 1000)
          .toISOString()
          .slice(11, 23);
        row.cells[1].textContent = event.direction === 'INBOUND' ? 'in' : event.direction === 'OUTBOUND' ? 'out' : '-';
        for (const [cell, text] of [
          [row.cells[2], peer(event.source, event.sourceAddress)],
          [row.cells[3], peer(event.destination, event.destinationAddress)],
        ]) {
          cell.textContent = text;
          cell.title = text;
        }
        while (rows.size > MAX_ROWS) {
          const [oldest, entry] = rows.entries().next().value;
          entry.tr.remove();
          rows.delete(oldest);
          older++;
        }
        showDrops();
      }
      const {tr, cells} = row;
      if (event.request) {
        tr.dataset.method = event.request.method || '';
        tr.dataset.path = event.request.path || '';
        cells[4].textContent = event.request.method || '';
        cells[5].textContent = event.request.path || '';
        cells[5].title =
          `${event.request.scheme || ''}://${event.request.authority || ''}${event.request.path || ''}`;
      } else if (event.response) {
        tr.dataset.status = String(event.response.status || 0);
        cells[6].textContent = String(event.response.status || 0);
        cells[8].textContent = format.latency(event.response.latencyNs);
      } else if (event.end) {
        const code = Number(event.end.grpcStatus || 0);
        if (code >= 0) {
          tr.dataset.grpcStatus = grpcStatusName(code);
          cells[7].textContent = grpcStatusName(code);
          if (event.end.grpcMessage) cells[7].title = event.end.grpcMessage;
        }
        const reason = event.end.reason || 'COMPLETE';
        if (reason !== 'COMPLETE') tr.dataset.end = reason.toLowerCase();
        tr.classList.toggle('failed', reason !== 'COMPLETE' || code > 0 || Number(tr.dataset.status) >= 500);
        cells[9].textContent = format.latency(event.end.durationNs);
      }
    }

    function onMessage(message) {
      if (!paused) {
        draw(message);
        return;
      }
      if (buffer.length < MAX_ROWS) buffer.push(message);
      else pausedDropped++;
    }

    function open() {
      status.textContent = 'Listening…';
      document.body.dataset.state = 'ready';
      close = nm.api.openTap(nm.api.tapUrl(state), {
        message: onMessage,
        error: (error) => {
          status.textContent = 'Stopped.';
          close = null;
          hooks.error(error);
        },
        end: () => {
          status.textContent = 'The tap ended.';
          close = null;
        },
      });
    }

    pause.addEventListener('click', () => {
      paused = !paused;
      pause.textContent = paused ? 'Resume' : 'Pause';
      pause.setAttribute('aria-pressed', String(paused));
      if (paused) {
        pausedAt = Date.now();
        status.textContent = 'Paused: new events are kept, not shown.';
        pauseTimer = setTimeout(() => {
          if (close) close();
          close = null;
          status.textContent = 'Paused for a minute: the tap is closed until you resume.';
        }, PAUSE_CLOSES_MS);
        return;
      }
      clearTimeout(pauseTimer);
      const held = buffer;
      buffer = [];
      held.forEach(draw);
      if (!close) open();
      else status.textContent = `Listening… (paused ${Math.round((Date.now() - pausedAt) / 1000)} s)`;
    });

    if (state.tap.target) {
      open();
    } else {
      status.textContent = 'Choose a workload to tap (NS/TYPE/NAME, e.g. emojivoto/deploy/web).';
      pause.disabled = true;
      document.body.dataset.state = 'ready';
    }
    return () => {
      clearTimeout(pauseTimer);
      if (close) close();
      close = null;
    };
  }

  // The filters of meshctl tap; applying them navigates (a new stream for the new filters).
  function filterForm(state) {
    const tap = state.tap;
    const field = (name, label, value, placeholder) =>
      el('label', {}, label, el('input', {name, value, placeholder, spellcheck: 'false'}));
    const form = el(
      'form',
      {class: 'tap-filters', 'data-tap-filters': ''},
      field('target', 'Target', tap.target || '', 'emojivoto/deploy/web'),
      field('to', 'To', tap.to || '', 'emojivoto/deploy/voting'),
      field('method', 'Method', tap.method, 'POST'),
      field('path', 'Path prefix', tap.path, '/api/'),
      field('authority', 'Authority', tap.authority, ''),
      field('scheme', 'Scheme', tap.scheme, 'http'),
      field('rps', 'Max RPS', String(tap.rps), ''),
      el('button', {type: 'submit'}, 'Tap')
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const value = (name) => form.elements[name].value.trim();
      const rps = value('rps');
      nm.state.navigate({
        tap: {
          target: value('target') || null,
          to: value('to') || null,
          method: value('method').toUpperCase(),
          path: value('path'),
          authority: value('authority'),
          scheme: value('scheme'),
          rps: rps === '' ? nm.state.DEFAULT_TAP_RPS : Number(rps),
        },
      });
    });
    return form;
  }

  nm.tap = {create, grpcStatusName};
})();
