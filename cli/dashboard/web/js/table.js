// The dashboard's table.js (placeholder until the page is written).
(function () {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  nm.table = nm.table || {};
})();
