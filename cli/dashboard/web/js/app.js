// The dashboard's app.js (placeholder until the page is written).
(function () {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  nm.app = nm.app || {};
})();
