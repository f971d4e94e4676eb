// The dashboard's commands.js (placeholder until the page is written).
(function () {
  'use strict';
  const nm = (window.nodemesh = window.nodemesh || {});
  nm.commands = nm.commands || {};
})();
