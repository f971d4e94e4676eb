// The dashboard's api.js (placeholder until the page is written).
(function () {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  nm.api = nm.api || {};
})();
