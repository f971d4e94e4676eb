// The page: the header (views, namespaces, window), the banners, the view, and the command
// box. Each view makes one request per refresh (every 5 s, every 2 s for windows up to 10 s)
// and redraws in place; the tap is a stream instead. document.body.dataset.state says where
// the view is: loading, ready (its data drawn), error (a [data-error] says why) or withheld
// (the graph is too large to draw; its panel offers filters).
(() => {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  const {el, format, Table} = nm.table;

  const WINDOWS = ['10s', '30s', '1m', '5m', '15m', '1h'];
  const TABS = [
    ['namespaces', 'Namespaces'],
    ['workloads', 'Workloads'],
    ['graph', 'Graph'],
    ['tap', 'Tap'],
  ];
  const refreshPeriodMs = (state) => (state.windowSeconds <= 10 ? 2000 : 5000);

  const setState = (value) => {
    document.body.dataset.state = value;
  };

  // ---- the page's fixed parts --------------------------------------------------------------

  const page = {};

  function buildShell() {
    page.tabs = TABS.map(([view, label]) => {
      const link = el('a', {href: '#', 'data-view': view}, label);
      link.addEventListener('click', (event) => {
        event.preventDefault();
        const state = nm.state.get();
        if (view === 'tap' && !state.tap.target && state.sel) {
          nm.state.navigate({view, tap: {target: state.sel}});
        } else {
          nm.state.navigate({view});
        }
      });
      return link;
    });
    page.namespaces = el('input', {
      id: 'namespaces',
      list: 'known-namespaces',
      placeholder: 'emojivoto,books',
      spellcheck: 'false',
      'data-namespace-chooser': '',
    });
    page.known = el('datalist', {id: 'known-namespaces'});
    page.namespaces.addEventListener('change', () => {
      const ns = page.namespaces.value.split(',').map((n) => n.trim()).filter((n) => n);
      const view = nm.state.get().view;
      nm.state.navigate({ns, view: view === 'graph' ? 'graph' : 'workloads', sel: null});
    });
    page.windows = WINDOWS.map((t) => {
      const button = el('button', {type: 'button', 'data-window': t}, t);
      button.addEventListener('click', () => nm.state.navigate({t}));
      return button;
    });
    page.windowField = el('input', {
      class: 'window-field',
      placeholder: '1m30s',
      size: '6',
      'aria-label': 'window',
      spellcheck: 'false',
    });
    page.windowField.addEventListener('change', () => {
      const t = page.windowField.value.trim();
      try {
        nm.state.parseWindow(t);
      } catch (error) {
        showWarnings([error.message]);
        return;
      }
      nm.state.navigate({t});
    });
    page.banners = el('div', {class: 'banners'});
    page.main = el('main', {'data-main': ''});
    page.command = el('pre', {'data-command': ''});
    const copy = el('button', {type: 'button', class: 'copy'}, 'Copy');
    copy.addEventListener('click', () => {
      navigator.clipboard.writeText(page.command.textContent).then(
        () => (copy.textContent = 'Copied'),
        () => (copy.textContent = 'Select and copy')
      );
    });
    page.note = el('p', {class: 'note', 'data-window-note': ''});
    const header = el(
      'header',
      {},
      el('h1', {}, 'nodemesh'),
      el('nav', {}, ...page.tabs),
      el('label', {class: 'chooser'}, 'Namespaces ', page.namespaces),
      page.known,
      el('span', {class: 'windows', role: 'group', 'aria-label': 'window'}, ...page.windows, page.windowField)
    );
    const footer = el(
      'footer',
      {},
      el('div', {class: 'command-head'}, el('span', {}, 'The same with meshctl:'), copy),
      page.command
    );
    document.body.append(header, page.banners, page.note, page.main, footer);
  }

  function showHeader(state) {
    const tab = state.view === 'workload' ? 'workloads' : state.view;
    for (const link of page.tabs) {
      if (link.dataset.view === tab) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
      const target = nm.state.patched(state, {view: link.dataset.view});
      link.setAttribute('href', nm.state.print(target));
    }
    if (document.activeElement !== page.namespaces) page.namespaces.value = state.ns.join(',');
    for (const button of page.windows) {
      button.setAttribute('aria-pressed', String(button.dataset.window === state.t));
    }
    if (document.activeElement !== page.windowField) {
      page.windowField.value = WINDOWS.includes(state.t) ? '' : state.t;
    }
  }

  function showCommands(lines) {
    page.command.textContent = lines.join('\n');
  }

  function showWarnings(messages) {
    for (const old of page.banners.querySelectorAll('[data-warning]')) old.remove();
    for (const message of messages) {
      page.banners.append(el('div', {class: 'banner warning', 'data-warning': ''}, message));
    }
  }

  function showError(error) {
    clearError();
    const text = error && error.message ? error.message : String(error);
    page.banners.append(el('div', {class: 'banner error', role: 'alert', 'data-error': error.code || ''}, text));
    setState('error');
  }

  function clearError() {
    for (const old of page.banners.querySelectorAll('[data-error]')) old.remove();
  }

  // "over the last 43 s (the aggregator started 15:19:58)" and the stale nodes, as meshctl.
  function showWindowNote(answer, state) {
    const parts = [];
    const covered = Number(answer.windowSeconds || 0);
    if (covered && covered < state.windowSeconds) {
      const started = new Date((Number(answer.unixSeconds || 0) - covered) * 1000);
      parts.push(
        `Over the last ${covered} s (the aggregator started ${started.toLocaleTimeString()}).`
      );
    }
    const stale = (answer.staleNodes || []).map((n) => n.node);
    if (stale.length) parts.push(`Data of ${stale.join(', ')} may be missing: no recent report.`);
    page.note.textContent = parts.join(' ');
  }

  const rememberNamespaces = (names) => {
    page.known.replaceChildren(...names.map((name) => el('option', {value: name})));
  };

  // ---- rows and columns --------------------------------------------------------------------

  const responded = (row) => Number(row.requests || 0) > 0;
  const rate = (row) => (responded(row) ? Number(row.successRate || 0) : -1);
  const latencyColumns = [
    ['p50', 'P50', 'p50Ns'],
    ['p95', 'P95', 'p95Ns'],
    ['p99', 'P99', 'p99Ns'],
  ].map(([key, label, field]) => ({
    key,
    label,
    numeric: true,
    value: (row) => Number((row.latency || {})[field] || 0),
    text: (row) => (responded(row) ? format.latency((row.latency || {})[field]) : '-'),
  }));
  const figureColumns = [
    {
      key: 'success',
      label: 'Success',
      numeric: true,
      value: rate,
      text: (row) => (responded(row) ? format.percent(Number(row.successRate || 0)) : '-'),
    },
    {
      key: 'rps',
      label: 'RPS',
      numeric: true,
      value: (row) => Number(row.rps || 0),
      text: (row) => format.rps(Number(row.rps || 0)),
    },
    ...latencyColumns,
  ];
  const meshedColumn = {
    key: 'meshed',
    label: 'Meshed',
    numeric: true,
    value: (row) => Number(row.meshedPods || 0),
    text: (row) => `${Number(row.meshedPods || 0)}/${Number(row.runningPods || 0)}`,
  };
  const statAttributes = (row) => ({
    'data-workload': nm.state.refOf(row.resource || {}),
    'data-success-rate': responded(row) ? String(Number(row.successRate || 0)) : null,
    'data-rps': String(Number(row.rps || 0)),
    'data-meshed': String(Number(row.meshedPods || 0)),
  });
  const nameOf = (resource, state) =>
    state.ns.length === 1 && resource.namespace === state.ns[0]
      ? resource.name || ''
      : `${resource.namespace || ''}/${resource.name || ''}`;

  // A table whose sort is kept in the fragment (replacing the history entry: not a view).
  function sortedTable(host, columns, options, state) {
    return new Table(host, columns, {
      sort: state.sort || '-rps',
      onSort: (sort) => nm.state.navigate({sort}, {replace: true}),
      ...options,
    });
  }

  // ---- the views ---------------------------------------------------------------------------
  // Each is {url (its request), draw(answer) (may return a Promise), close()}.

  function namespacesView(host, state) {
    const table = sortedTable(
      host,
      [
        {key: 'name', label: 'Namespace', value: (row) => row.resource.name || ''},
        meshedColumn,
        ...figureColumns,
      ],
      {
        key: (row) => row.resource.name || '',
        attributes: (row) => ({
          'data-namespace': row.resource.name || '',
          'data-success-rate': responded(row) ? String(Number(row.successRate || 0)) : null,
          'data-rps': String(Number(row.rps || 0)),
          'data-meshed': String(Number(row.meshedPods || 0)),
        }),
        onRow: (row) => nm.state.navigate({view: 'workloads', ns: [row.resource.name]}),
        empty: 'No namespace has pods or traffic in this window.',
      },
      state
    );
    host.prepend(el('p', {class: 'hint'}, 'Choose a namespace to see its workloads.'));
    return {
      draw(answer) {
        const rows = ((answer.stats || {}).rows || []).filter((row) => row.resource);
        rememberNamespaces(rows.map((row) => row.resource.name || ''));
        table.update(rows);
      },
    };
  }

  function workloadsView(host, state) {
    const table = sortedTable(
      host,
      [
        {key: 'name', label: 'Workload', value: (row) => nameOf(row.resource || {}, state)},
        meshedColumn,
        ...figureColumns,
        {
          key: 'tcp',
          label: 'TCP',
          numeric: true,
          value: (row) => Number(row.tcpOpenConnections || 0),
          text: (row) => format.count(row.tcpOpenConnections),
        },
      ],
      {
        key: (row) => nm.state.refOf(row.resource || {}),
        attributes: statAttributes,
        onRow: (row) => nm.state.navigate({view: 'workload', sel: nm.state.refOf(row.resource)}),
        empty: `No ${nm.state.LONG_TYPES[state.type]} in ${state.ns.join(', ')} in this window.`,
      },
      state
    );
    return {draw: (answer) => table.update((answer.stats || {}).rows || [])};
  }

  function workloadView(host, state) {
    const sel = state.sel;
    const section = (title) => {
      const part = el('section', {}, el('h2', {}, title));
      host.append(part);
      return part;
    };
    host.append(el('h2', {class: 'title'}, sel));
    const row = new Table(section('Its figures'), [meshedColumn, ...figureColumns], {
      key: () => sel,
      attributes: statAttributes,
      empty: 'No pods or traffic in this window.',
    });
    const edgeTable = (title, far) =>
      sortedTable(
        section(title),
        [
          {key: 'name', label: 'Workload', value: (edge) => nm.state.refOf(edge[far] || {})},
          ...figureColumns,
          {
            key: 'accounts',
            label: 'Service accounts',
            value: (edge) => `${edge.sourceServiceAccount || '-'} → ${edge.destinationServiceAccount || '-'}`,
          },
        ],
        {
          key: (edge) => `${nm.state.refOf(edge.source || {})}>${nm.state.refOf(edge.destination || {})}`,
          attributes: (edge) => ({
            'data-edge': `${nm.state.refOf(edge.source || {})}>${nm.state.refOf(edge.destination || {})}`,
            'data-success-rate': responded(edge) ? String(Number(edge.successRate || 0)) : null,
            'data-rps': String(Number(edge.rps || 0)),
          }),
          onRow: (edge) => {
            const ref = nm.state.refOf(edge[far] || {});
            if (nm.state.parseRef(ref)) nm.state.navigate({sel: ref});
          },
          empty: 'None in this window.',
        },
        state
      );
    const inbound = edgeTable('Called by', 'source');
    const outbound = edgeTable('Calls', 'destination');
    const routes = sortedTable(
      section('Routes it serves'),
      [{key: 'route', label: 'Route', value: (route) => route.route || ''}, ...figureColumns],
      {key: (route) => route.route || '', empty: 'No routes in this window.'},
      state
    );
    const explainBox = el('pre', {class: 'explain', 'data-explain': ''});
    let explainLine = null;
    let lines = [];
    const showExplain = (pod) => {
      const name = `${pod.identity.namespace}/${pod.identity.pod}`;
      explainBox.textContent = `Explaining ${name}…`;
      explainLine = nm.commands.explain(name, pod.identity.node || 'NODE');
      showCommands([...lines, explainLine]);
      nm.api.explain(name).then(
        (answer) => {
          explainBox.textContent = answer.text;
          explainBox.dataset.pod = name;
        },
        (error) => {
          explainBox.textContent = '';
          explainBox.append(el('span', {class: 'error', 'data-error': error.code || ''}, error.message));
        }
      );
    };
    const podsPart = section('Pods (click one to explain it)');
    const pods = new Table(
      podsPart,
      [
        {key: 'pod', label: 'Pod', value: (pod) => pod.identity.pod || ''},
        {key: 'node', label: 'Node', value: (pod) => pod.identity.node || ''},
        {key: 'state', label: 'State', value: (pod) => (pod.state || '').toLowerCase()},
        {key: 'why', label: 'Why', value: (pod) => pod.stateReason || ''},
      ],
      {
        key: (pod) => pod.identity.pod || '',
        attributes: (pod) => ({'data-pod': `${pod.identity.namespace}/${pod.identity.pod}`}),
        onRow: showExplain,
        empty: 'No pods.',
      }
    );
    podsPart.append(explainBox);
    const tap = el('a', {href: nm.state.print(nm.state.patched(state, {view: 'tap', tap: {target: sel}}))}, `Tap ${sel}`);
    host.append(el('p', {}, tap));
    const isSel = (resource) => nm.state.refOf(resource || {}) === sel;
    return {
      draw(answer) {
        lines = nm.commands.forView(state);
        if (explainLine) showCommands([...lines, explainLine]);
        row.update(((answer.stats || {}).rows || []).slice(0, 1));
        const edges = (answer.edges || {}).edges || [];
        inbound.update(edges.filter((edge) => isSel(edge.destination)));
        outbound.update(edges.filter((edge) => isSel(edge.source)));
        routes.update((answer.routes || {}).routes || []);
        pods.update(((answer.pods || {}).pods || []).filter((pod) => pod.identity));
      },
    };
  }

  function graphView(host, state) {
    if (!nm.graph || !nm.graph.render) return null;
    let drawn = null;
    return {
      draw(answer) {
        // The graph draws into an empty element; the previous drawing stays until it is done.
        const next = el('div', {class: 'graph-host'});
        host.append(next);
        return nm.graph.render(next, answer, state).then((result) => {
          if (drawn) drawn.remove();
          drawn = next;
          return result && result.withheld ? 'withheld' : 'ready';
        });
      },
    };
  }

  const VIEWS = {
    namespaces: namespacesView,
    workloads: workloadsView,
    workload: workloadView,
    graph: graphView,
  };

  // ---- the loop ----------------------------------------------------------------------------

  let shown = null; // {key, state, view, timer, closeTap}

  // What makes a view new (rather than the same view refreshed): all but the sort.
  const viewKey = (state) => nm.state.print({...state, sort: null});

  function leave() {
    if (!shown) return;
    clearTimeout(shown.timer);
    if (shown.closeTap) shown.closeTap();
    nm.api.abortView();
    shown = null;
  }

  function refresh(current) {
    clearTimeout(current.timer);
    const url = nm.api.viewUrl(current.state);
    nm.api
      .fetchView(url)
      .then(async (answer) => {
        if (shown !== current) return;
        const drawn = await current.view.draw(answer);
        if (shown !== current) return;
        clearError();
        showWindowNote(answer, current.state);
        setState(drawn || 'ready');
      })
      .catch((error) => {
        if (error.name === 'AbortError' || shown !== current) return;
        showError(error);
      })
      .finally(() => {
        if (shown === current) {
          current.timer = setTimeout(() => refresh(current), refreshPeriodMs(current.state));
        }
      });
  }

  function render(state) {
    showHeader(state);
    showWarnings(state.errors);
    showCommands(nm.commands.forView(state));
    const key = viewKey(state);
    if (shown && shown.key === key) {
      shown.state = state; // a new sort: the tables sort themselves
      return;
    }
    leave();
    clearError();
    page.note.textContent = '';
    page.main.replaceChildren();
    setState('loading');
    const host = el('div', {class: `view view-${state.view}`, 'data-view': state.view});
    page.main.append(host);
    const current = {key, state, view: null, timer: null, closeTap: null};
    shown = current;
    if (state.view === 'tap') {
      current.closeTap = nm.tap.create(host, state, {error: showError});
      return;
    }
    current.view = VIEWS[state.view](host, state);
    if (!current.view) {
      showError({
        code: 'UNAVAILABLE',
        message: 'The call graph is not part of this build of the page: use the Workloads view, ' +
          'or the command below.',
      });
      return;
    }
    refresh(current);
  }

  function start() {
    buildShell();
    nm.state.subscribe(render);
    render(nm.state.get());
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
