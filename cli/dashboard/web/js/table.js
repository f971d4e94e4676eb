// Sortable tables refreshed in place: each row is keyed, so a refresh updates the cells of
// the rows it already has, adds and removes only what changed and keeps the rows' elements
// (a selection, a hover, the scroll position survive the 5 s refresh).
(() => {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});

  // Creates an element with attributes and children (strings become text nodes).
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) {
        node.append(typeof child === 'string' ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  // Figures as the CLI shows them (cli/views/format.cc).
  const format = {
    percent: (rate) => `${(100 * rate).toFixed(2)}%`,
    rps: (rps) => `${rps.toFixed(1)}`,
    latency(ns) {
      const n = Number(ns || 0);
      if (n >= 1e9) return `${(n / 1e9).toFixed(2)}s`;
      if (n >= 1e6) return `${(n / 1e6).toFixed(0)}ms`;
      if (n >= 1e3) return `${(n / 1e3).toFixed(0)}µs`;
      return `${n}ns`;
    },
    count: (value) => String(Number(value || 0)),
  };

  // columns: [{key, label, numeric, value(row) (for sorting), text(row) (shown; default the
  //   value), cell(row, td) (fills the cell itself instead)}]
  // options: {key(row) -> string, attributes(row) -> {name: value}, sort ("-rps" or "name"),
  //   onSort(sort), onRow(row) (a click on the row), caption, empty (text without rows)}
  class Table {
    constructor(host, columns, options) {
      this.columns = columns;
      this.options = options;
      this.rows = new Map(); // key -> {tr, cells}
      this.sort = options.sort || null;
      this.head = el('thead');
      this.body = el('tbody');
      this.emptyRow = el('tr', {class: 'empty'}, el('td', {colspan: String(columns.length)}));
      this.table = el('table', {class: 'data'}, this.head, this.body);
      if (options.caption) this.table.prepend(el('caption', {}, options.caption));
      this.headers = columns.map((column) => {
        const button = el('button', {type: 'button'}, column.label);
        button.addEventListener('click', () => this.sortBy(column.key));
        return el('th', {class: column.numeric ? 'num' : null, 'data-column': column.key}, button);
      });
      this.head.append(el('tr', {}, ...this.headers));
      host.append(this.table);
    }

    sortBy(key) {
      // Largest first on the first click, then the other way.
      const sort = this.sort === `-${key}` ? key : `-${key}`;
      this.sort = sort;
      if (this.options.onSort) this.options.onSort(sort);
      this.update(this.last || []);
    }

    // Shows `rows` (in the order of the current sort), reusing the rows already shown.
    update(rows) {
      this.last = rows;
      const seen = new Set();
      const ordered = this.sorted(rows);
      for (const row of ordered) {
        const key = this.options.key(row);
        seen.add(key);
        let entry = this.rows.get(key);
        if (!entry) {
          entry = this.createRow(row);
          this.rows.set(key, entry);
        }
        entry.row = row;
        this.fill(entry);
        this.body.append(entry.tr); // moves it into place
      }
      for (const [key, entry] of this.rows) {
        if (!seen.has(key)) {
          entry.tr.remove();
          this.rows.delete(key);
        }
      }
      this.emptyRow.firstChild.textContent = this.options.empty || 'Nothing in this window.';
      if (rows.length === 0) this.body.append(this.emptyRow);
      else this.emptyRow.remove();
      for (const [i, column] of this.columns.entries()) {
        const order =
          this.sort === column.key ? 'ascending' : this.sort === `-${column.key}` ? 'descending' : null;
        if (order) this.headers[i].setAttribute('aria-sort', order);
        else this.headers[i].removeAttribute('aria-sort');
      }
    }

    sorted(rows) {
      if (!this.sort) return rows;
      const descending = this.sort.startsWith('-');
      const key = descending ? this.sort.slice(1) : this.sort;
      const column = this.columns.find((c) => c.key === key);
      if (!column) return rows;
      const value = (row) => column.value(row);
      return [...rows].sort((a, b) => {
        const x = value(a);
        const y = value(b);
        const order = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
        return descending ? -order : order;
      });
    }

    createRow(row) {
      const cells = this.columns.map((column) => el('td', {class: column.numeric ? 'num' : null}));
      const tr = el('tr', {}, ...cells);
      const entry = {tr, cells, row};
      if (this.options.onRow) {
        tr.classList.add('clickable');
        tr.tabIndex = 0;
        tr.addEventListener('click', () => this.options.onRow(entry.row));
        tr.addEventListener('keydown', (event) => {
          if (event.key === 'Enter') this.options.onRow(entry.row);
        });
      }
      return entry;
    }

    fill(entry) {
      const attributes = this.options.attributes ? this.options.attributes(entry.row) : {};
      for (const [name, value] of Object.entries(attributes)) {
        if (value === null || value === undefined) entry.tr.removeAttribute(name);
        else if (entry.tr.getAttribute(name) !== String(value)) entry.tr.setAttribute(name, value);
      }
      this.columns.forEach((column, i) => {
        const td = entry.cells[i];
        if (column.cell) {
          column.cell(entry.row, td);
          return;
        }
        const text = column.text ? column.text(entry.row) : String(column.value(entry.row));
        if (td.textContent !== text) td.textContent = text;
      });
    }
  }

  nm.table = {el, format, Table};
})();
