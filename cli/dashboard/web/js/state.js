// The page's state, kept in the URL fragment (#/VIEW?PARAMS) so that a copied link reopens the
// same view in any dashboard, whatever its port and token. parse() reads a fragment into the
// state object every other file reads; print() writes it back; navigate() changes it.
// A bad parameter never blanks the page: it is named in state.errors and its default is used.
(() => {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});

  const VIEWS = ['namespaces', 'workloads', 'workload', 'graph', 'tap'];
  // The short names of cli/resource.h, used in ids and the fragment; the API's names.
  const LONG_TYPES = {
    deploy: 'deployment',
    sts: 'statefulset',
    ds: 'daemonset',
    po: 'pod',
    svc: 'service',
  };
  const SHORT_TYPES = Object.fromEntries(Object.entries(LONG_TYPES).map(([s, l]) => [l, s]));
  const DEFAULT_WINDOW = '1m';
  const DEFAULT_TAP_RPS = 10;
  const MIN_WINDOW_SECONDS = 10;
  // Past an hour (kMaxWindowSeconds) the aggregator asks its store, when it has one.
  const MAX_WINDOW_SECONDS = 31 * 86400;

  // cli::ParseWindow (cli/resource.cc): numbers of at most 6 digits, each followed by d, h, m
  // or s, summing to 10 s .. 31 d. Returns the seconds, or throws with meshctl's own message.
  function parseWindow(text) {
    const bad = () =>
      new Error(
        `bad time window '${text}': use 10s to 31d, written like 10s, 90s, 1m30s, 1h, 24h or 7d ` +
          '(past 1h the aggregator asks its Prometheus-compatible store)',
      );
    if (typeof text !== 'string' || text === '') throw bad();
    let seconds = 0;
    let i = 0;
    while (i < text.length) {
      let number = 0;
      const start = i;
      while (i < text.length && text[i] >= '0' && text[i] <= '9' && i - start < 6) {
        number = number * 10 + (text.charCodeAt(i++) - 48);
      }
      if (i === start || i === text.length) throw bad();
      const unit = text[i++];
      if (unit === 'd') seconds += number * 86400;
      else if (unit === 'h') seconds += number * 3600;
      else if (unit === 'm') seconds += number * 60;
      else if (unit === 's') seconds += number;
      else throw bad();
    }
    if (seconds < MIN_WINDOW_SECONDS || seconds > MAX_WINDOW_SECONDS) throw bad();
    return seconds;
  }

  // A Kubernetes namespace name (an RFC 1123 label).
  const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
  // A workload's name (an RFC 1123 subdomain); an external peer's is an address.
  const NAME = /^[A-Za-z0-9]([-A-Za-z0-9.:\[\]]{0,251}[A-Za-z0-9\]])?$/;

  // "NS/TYPE/NAME" -> {namespace, type (short), name}, or null.
  function parseRef(text) {
    const parts = String(text).split('/');
    if (parts.length !== 3) return null;
    const [namespace, type, name] = parts;
    if (!NAMESPACE.test(namespace) || !(type in LONG_TYPES) || !NAME.test(name)) return null;
    return {namespace, type, name};
  }

  // An end of a call: a workload, or a peer outside the cluster ("/external/ADDRESS", with
  // a namespace when the aggregator knows whose it is), as the graph names them.
  const EXTERNAL = /^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?\/external\/[^/>\s]{1,253}$/;
  const isEnd = (text) => parseRef(text) !== null || EXTERNAL.test(text);

  // What the graph's "hide" may name besides namespaces: every peer outside the cluster.
  const HIDE_EXTERNAL = ':external';

  // An API Resource ({type: long, namespace, name}) -> "NS/TYPE/NAME".
  function refOf(resource) {
    const type = SHORT_TYPES[resource.type] || resource.type || '';
    return `${resource.namespace || ''}/${type}/${resource.name || ''}`;
  }

  function defaults() {
    return {
      view: 'namespaces',
      ns: [],
      t: DEFAULT_WINDOW,
      windowSeconds: 60,
      type: 'deploy',
      sel: null,
      edge: null,
      failing: false,
      around: null,
      hide: [],
      all: false,
      sort: null,
      tap: {
        target: null,
        to: null,
        method: '',
        path: '',
        authority: '',
        scheme: '',
        rps: DEFAULT_TAP_RPS,
      },
      errors: [],
    };
  }

  const decode = (value) => {
    try {
      return decodeURIComponent(value);
    } catch (e) {
      return value;
    }
  };
  const splitList = (value) => value.split(',').filter((v) => v !== '');

  // Each parameter's reader: sets its part of `state`, or returns what is wrong with it.
  const READERS = {
    ns(state, value) {
      const names = splitList(value);
      const bad = names.filter((n) => !NAMESPACE.test(n));
      state.ns = [...new Set(names.filter((n) => NAMESPACE.test(n)))];
      return bad.length ? `ns: '${bad.join(',')}' is no namespace name` : null;
    },
    t(state, value) {
      state.windowSeconds = parseWindow(value);
      state.t = value;
      return null;
    },
    type(state, value) {
      if (!(value in LONG_TYPES)) {
        return `type: '${value}' is not one of ${Object.keys(LONG_TYPES).join(', ')}`;
      }
      state.type = value;
      return null;
    },
    sel: (state, value) => readRef(state, 'sel', value),
    around: (state, value) => readRef(state, 'around', value),
    edge(state, value) {
      const ends = value.split('>');
      if (ends.length !== 2 || !isEnd(ends[0]) || !isEnd(ends[1])) {
        return `edge: '${value}' is not NS/TYPE/NAME>NS/TYPE/NAME`;
      }
      state.edge = value;
      return null;
    },
    f(state, value) {
      if (value !== 'failing') return `f: '${value}' is not 'failing'`;
      state.failing = true;
      return null;
    },
    hide(state, value) {
      const hideable = (n) => NAMESPACE.test(n) || n === HIDE_EXTERNAL;
      const names = splitList(value);
      const bad = names.filter((n) => !hideable(n));
      state.hide = [...new Set(names.filter(hideable))];
      return bad.length ? `hide: '${bad.join(',')}' is no namespace name` : null;
    },
    all(state, value) {
      if (value !== '1') return `all: '${value}' is not 1`;
      state.all = true;
      return null;
    },
    sort(state, value) {
      if (!/^-?[a-zA-Z]{1,32}$/.test(value)) return `sort: '${value}' is no column`;
      state.sort = value;
      return null;
    },
    target: (state, value) => readTapRef(state, 'target', value),
    to: (state, value) => readTapRef(state, 'to', value),
    method(state, value) {
      if (!/^[A-Z]{1,16}$/.test(value)) return `method: '${value}' is no HTTP method, e.g. POST`;
      state.tap.method = value;
      return null;
    },
    path(state, value) {
      if (!value.startsWith('/')) return `path: '${value}' must start with /`;
      state.tap.path = value;
      return null;
    },
    authority(state, value) {
      state.tap.authority = value;
      return null;
    },
    scheme(state, value) {
      if (value !== 'http' && value !== 'https') return `scheme: '${value}' is not http or https`;
      state.tap.scheme = value;
      return null;
    },
    rps(state, value) {
      const rps = Number(value);
      if (!/^[0-9]+(\.[0-9]+)?$/.test(value) || !(rps > 0)) {
        return `rps: '${value}' is not a positive number`;
      }
      state.tap.rps = rps;
      return null;
    },
  };

  function readRef(state, param, value) {
    if (!parseRef(value)) return `${param}: '${value}' is not NS/TYPE/NAME, e.g. emojivoto/deploy/web`;
    state[param] = value;
    return null;
  }
  function readTapRef(state, param, value) {
    const ref = parseRef(value);
    if (!ref || ref.type === 'svc') {
      return `${param}: '${value}' is not NS/TYPE/NAME of a workload, e.g. emojivoto/deploy/web`;
    }
    state.tap[param] = value;
    return null;
  }

  // "#/VIEW?PARAMS" -> the state object, with the problems found in state.errors.
  function parse(hash) {
    const state = defaults();
    const text = String(hash || '').replace(/^#/, '');
    const question = text.indexOf('?');
    const path = (question < 0 ? text : text.slice(0, question)).replace(/^\/+|\/+$/g, '');
    const query = question < 0 ? '' : text.slice(question + 1);
    for (const pair of query.split('&')) {
      if (pair === '') continue;
      const equals = pair.indexOf('=');
      const name = decode(equals < 0 ? pair : pair.slice(0, equals));
      const value = equals < 0 ? '' : decode(pair.slice(equals + 1));
      const reader = Object.prototype.hasOwnProperty.call(READERS, name) ? READERS[name] : null;
      if (!reader) {
        state.errors.push(`unknown parameter '${name}'`);
        continue;
      }
      try {
        const problem = reader(state, value);
        if (problem) state.errors.push(problem);
      } catch (error) {
        state.errors.push(`${name}: ${error.message}`);
      }
    }
    if (path === '') {
      state.view = state.ns.length ? 'workloads' : 'namespaces';
    } else if (VIEWS.includes(path)) {
      state.view = path;
    } else {
      state.errors.push(`unknown view '${path}': the views are ${VIEWS.join(', ')}`);
      state.view = state.ns.length ? 'workloads' : 'namespaces';
    }
    if (state.view === 'workload' && !state.sel) {
      state.errors.push('the workload view needs sel=NS/TYPE/NAME');
      state.view = state.ns.length ? 'workloads' : 'namespaces';
    }
    if ((state.view === 'workloads' || state.view === 'graph') && !state.ns.length) {
      state.view = 'namespaces';
    }
    // A call is selected in the graph only: leaving it for a workload leaves the selection.
    if (state.view !== 'graph') state.edge = null;
    return state;
  }

  // Values keep '/', ',', ':', '>' and '@' readable; everything else a fragment may not
  // hold literally, or that would end a parameter, is percent-encoded.
  const encode = (value) =>
    encodeURIComponent(value).replace(/%(2F|2C|3A|3E|40)/g, (m) => decode(m));

  // The state -> "#/VIEW?PARAMS", defaults left out, parameters in a fixed order.
  function print(state) {
    const params = [];
    const add = (name, value) => params.push(`${name}=${encode(String(value))}`);
    if (state.ns.length) add('ns', state.ns.join(','));
    if (state.t !== DEFAULT_WINDOW) add('t', state.t);
    if (state.type !== 'deploy') add('type', state.type);
    if (state.sel) add('sel', state.sel);
    if (state.edge) add('edge', state.edge);
    if (state.failing) add('f', 'failing');
    if (state.around) add('around', state.around);
    if (state.hide.length) add('hide', state.hide.join(','));
    if (state.all) add('all', '1');
    if (state.sort) add('sort', state.sort);
    const tap = state.tap;
    if (tap.target) add('target', tap.target);
    if (tap.to) add('to', tap.to);
    if (tap.method) add('method', tap.method);
    if (tap.path) add('path', tap.path);
    if (tap.authority) add('authority', tap.authority);
    if (tap.scheme) add('scheme', tap.scheme);
    if (tap.rps !== DEFAULT_TAP_RPS) add('rps', tap.rps);
    return `#/${state.view}${params.length ? '?' + params.join('&') : ''}`;
  }

  // The state after `patch` (its `tap` merged field by field), checked as a fragment is.
  function patched(state, patch) {
    const next = {...state, ...patch, tap: {...state.tap, ...(patch.tap || {})}};
    if (patch.t !== undefined) next.windowSeconds = parseWindow(patch.t);
    return parse(print(next));
  }

  const listeners = [];
  let current = null;

  // The state of the page now (parsed from location.hash when it changed).
  function get() {
    if (!current || current.hash !== location.hash) {
      current = {hash: location.hash, state: parse(location.hash)};
    }
    return current.state;
  }

  // Changes the state: a new history entry, or (replace) the current one for selections,
  // so that Back goes to the previous view. Listeners render the new state.
  function navigate(patch, options = {}) {
    const next = patched(get(), patch);
    const hash = print(next);
    if (hash !== location.hash) {
      if (options.replace) history.replaceState(null, '', hash);
      else history.pushState(null, '', hash);
    }
    notify();
  }

  // Back and Forward fire both popstate and hashchange: one render for each new fragment.
  let notified = null;
  function notify() {
    notified = location.hash;
    for (const listener of listeners) listener(get());
  }
  const notifyIfChanged = () => {
    if (location.hash !== notified) notify();
  };

  // `listener(state)` runs on every change: navigate(), Back and Forward, an edited URL.
  function subscribe(listener) {
    listeners.push(listener);
  }
  window.addEventListener('popstate', notifyIfChanged);
  window.addEventListener('hashchange', notifyIfChanged);

  nm.state = {
    HIDE_EXTERNAL,
    LONG_TYPES,
    SHORT_TYPES,
    DEFAULT_TAP_RPS,
    parseWindow,
    parseRef,
    refOf,
    defaults,
    parse,
    print,
    patched,
    get,
    navigate,
    subscribe,
  };
})();
