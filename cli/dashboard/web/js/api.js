// Talking to meshctl dashboard: the URL of each view's one request, the request itself (a
// refresh aborts the one still in flight, so a slow aggregator sees no pile-up), the tap's
// NDJSON stream, and the pod explain. Errors are ApiError with the server's code and message
// (the line meshctl prints, with its kubectl grant command when it has one).
(() => {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});

  const API = '/api/v1alpha1';

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  function query(params) {
    const parts = [];
    for (const [name, value] of params) {
      parts.push(`${encodeURIComponent(name)}=${encodeURIComponent(value)}`);
    }
    return parts.length ? '?' + parts.join('&') : '';
  }

  // The first chosen namespace goes in the path (where the API checks access first), the
  // others in namespaces=.
  function namespaced(namespaces) {
    return `${API}/namespaces/${encodeURIComponent(namespaces[0])}`;
  }

  // The request of a view (not tap) for a state.
  function viewUrl(state) {
    const seconds = ['windowSeconds', String(state.windowSeconds)];
    const type = ['type', nm.state.LONG_TYPES[state.type]];
    const others = state.ns.slice(1).map((ns) => ['namespaces', ns]);
    switch (state.view) {
      case 'namespaces':
        return `${API}/views/namespaces${query([seconds])}`;
      case 'workloads':
        return `${namespaced(state.ns)}/views/workloads${query([...others, type, seconds])}`;
      case 'workload': {
        const ref = nm.state.parseRef(state.sel);
        return `${namespaced([ref.namespace])}/views/workload${query([
          ['resource.type', nm.state.LONG_TYPES[ref.type]],
          ['resource.name', ref.name],
          seconds,
        ])}`;
      }
      case 'graph': {
        const filter = nm.graph && nm.graph.requestParams ? nm.graph.requestParams(state) : [];
        return `${namespaced(state.ns)}/views/graph${query([...others, type, seconds, ...filter])}`;
      }
      default:
        throw new Error(`no view request for ${state.view}`);
    }
  }

  // The tap stream of a state's tap filters.
  function tapUrl(state) {
    const tap = state.tap;
    const target = nm.state.parseRef(tap.target);
    const params = [
      ['watch', 'true'],
      ['target.type', nm.state.LONG_TYPES[target.type]],
      ['target.name', target.name],
    ];
    if (tap.to) {
      const to = nm.state.parseRef(tap.to);
      params.push(['to.type', nm.state.LONG_TYPES[to.type]], ['to.namespace', to.namespace]);
      params.push(['to.name', to.name]);
    }
    if (tap.method) params.push(['method', tap.method]);
    if (tap.path) params.push(['pathPrefix', tap.path]);
    if (tap.authority) params.push(['authority', tap.authority]);
    if (tap.scheme) params.push(['scheme', tap.scheme]);
    params.push(['maxRps', String(tap.rps)]);
    return `${namespaced([target.namespace])}/taps${query(params)}`;
  }

  // An answer that is not 2xx, as an ApiError.
  async function errorOf(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      // Not JSON: a proxy's page, or the server went away mid-answer.
    }
    if (body && typeof body.message === 'string') {
      return new ApiError(body.code || String(response.status), body.message, response.status);
    }
    return new ApiError(
      String(response.status),
      `meshctl dashboard answered ${response.status} ${response.statusText}: is it still running?`,
      response.status
    );
  }

  const unreachable = () =>
    new ApiError('UNAVAILABLE', 'meshctl dashboard cannot be reached: is it still running?', 0);

  async function getJson(url, signal) {
    let response;
    try {
      response = await fetch(url, {signal, credentials: 'same-origin', cache: 'no-store'});
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw unreachable();
    }
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  let inFlight = null;

  // The view's answer. Aborts the previous call's request if it is still running: that
  // call then rejects with an error named AbortError, which callers ignore.
  function fetchView(url) {
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    return getJson(url, controller.signal).finally(() => {
      if (inFlight === controller) inFlight = null;
    });
  }

  // Stops the view request in flight, if any (the view is being left).
  function abortView() {
    if (inFlight) inFlight.abort();
    inFlight = null;
  }

  // The explain checklist of a pod "NS/NAME": {pod, node, text}.
  function explain(pod) {
    return getJson(`/api/dashboard/explain${query([['pod', pod]])}`);
  }

  // Opens a tap stream. handlers: message(TapStreamMessage), error(ApiError), end() when
  // the stream ended cleanly. Returns close(), which ends the stream (and the aggregator's
  // tap with it); no handler runs after it.
  function openTap(url, handlers) {
    const controller = new AbortController();
    let closed = false;
    const fail = (error) => {
      if (!closed && error.name !== 'AbortError') handlers.error(error);
    };
    const handleLine = (line) => {
      if (line.trim() === '') return;
      let message;
      try {
        message = JSON.parse(line);
      } catch (e) {
        throw new ApiError('INTERNAL', `the tap stream sent a line that is not JSON: ${line}`, 0);
      }
      if (message.error) {
        throw new ApiError(message.error.code || 'UNKNOWN', message.error.message || '', 0);
      }
      if (Object.keys(message).length === 0) return; // a heartbeat
      if (!closed) handlers.message(message);
    };
    (async () => {
      let response;
      try {
        response = await fetch(url, {signal: controller.signal, credentials: 'same-origin'});
      } catch (error) {
        fail(error.name === 'AbortError' ? error : unreachable());
        return;
      }
      if (!response.ok) {
        fail(await errorOf(response));
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let pending = '';
      try {
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          pending += value;
          const lines = pending.split('\n');
          pending = lines.pop();
          lines.forEach(handleLine);
        }
        handleLine(pending);
        if (!closed) handlers.end();
      } catch (error) {
        fail(error instanceof ApiError || error.name === 'AbortError' ? error : unreachable());
      }
    })();
    return () => {
      closed = true;
      controller.abort();
    };
  }

  nm.api = {ApiError, viewUrl, tapUrl, fetchView, abortView, explain, openTap};
})();
