// pfcon dashboard: keeps the jobs table and a job's status and log tail live by polling
// the server's JSON views (ADR 22). Text is only ever set with textContent: job names,
// images, messages and logs are untrusted. Without this script the pages still work;
// they are just not live.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var url = main && main.getAttribute("data-poll");
  if (!url) return;
  var PERIOD_MS = 3000;
  var stopped = false;

  function text(el, value) {
    if (el && el.textContent !== value) el.textContent = value;
  }

  function setStatus(el, label, cls) {
    if (!el) return;
    text(el, label);
    var wanted = "status " + cls;
    if (el.className !== wanted) el.className = wanted;
  }

  function cell(tag, attrs) {
    var el = document.createElement(tag);
    for (var k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }

  function newRow(job) {
    var tr = cell("tr", { "data-name": job.name });
    var head = cell("th", { scope: "row" });
    if (job.href) {
      var a = cell("a", { href: job.href });
      a.textContent = job.name;
      head.appendChild(a);
    } else {
      head.textContent = job.name;
    }
    tr.appendChild(head);
    tr.appendChild(cell("td", {}));
    var st = cell("td", {});
    st.appendChild(cell("span", { "class": "status" }));
    st.appendChild(document.createTextNode(" "));
    st.appendChild(cell("span", { "class": "msg" }));
    tr.appendChild(st);
    tr.appendChild(cell("td", { "class": "image" }));
    var age = cell("td", {});
    age.appendChild(cell("time", {}));
    tr.appendChild(age);
    for (var i = 0; i < 3; i++) tr.appendChild(cell("td", {}));
    return tr;
  }

  function fillRow(tr, job) {
    var c = tr.children;
    text(c[1], job.kind);
    var spans = c[2].getElementsByTagName("span");
    setStatus(spans[0], job.status_label, job.status_class);
    text(spans[1], job.note);
    text(c[3], job.image);
    var time = c[4].firstElementChild;
    if (time.getAttribute("datetime") !== job.created) time.setAttribute("datetime", job.created);
    text(time, job.age);
    text(c[5], job.resources);
    text(c[6], job.scheduler);
    text(c[7], job.node);
  }

  function renderJobs(data) {
    var tbody = document.querySelector("#jobs tbody");
    var rows = {};
    Array.prototype.forEach.call(tbody.children, function (tr) { rows[tr.getAttribute("data-name")] = tr; });
    data.jobs.forEach(function (job, i) {
      var tr = rows[job.name] || newRow(job);
      delete rows[job.name];
      fillRow(tr, job);
      // Insert before, never move an existing row: a moved row would lose keyboard focus.
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (var name in rows) rows[name].remove();
    text(document.getElementById("job-count"), String(data.jobs.length));
    var problem = document.getElementById("jobs-problem");
    if (problem) {
      text(problem, data.problem || "");
      problem.hidden = !data.problem;
    }
    var health = document.getElementById("health");
    if (health) {
      data.health.forEach(function (h) {
        var li = health.querySelector('[data-key="' + h.kind + '"]');
        if (!li) return;
        li.className = h.ok ? "ok" : "down";
        text(li.firstElementChild, h.ok ? "\u2714" : "\u2718");
        text(li.lastChild, " " + h.text);
      });
    }
  }

  function renderJob(data) {
    setStatus(document.getElementById("job-status"), data.status_label, data.status_class);
    text(document.getElementById("job-message"), data.message);
    var logs = document.getElementById("logs");
    if (logs && logs.textContent !== data.logs) {
      var atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.textContent = data.logs;
      if (atEnd) logs.scrollTop = logs.scrollHeight;
    }
    var cancel = document.getElementById("cancel-link");
    if (cancel && data.terminal && document.activeElement !== cancel) cancel.remove();
    if (data.terminal) stopped = true;  // a finished job no longer changes
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) {
          window.location.assign("/dashboard/login/");
          throw new Error("signed out");
        }
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      })
      .then(function (res) {
        if (!res.ok) throw new Error(res.body.message || "request failed");
        if (document.getElementById("jobs")) renderJobs(res.body); else renderJob(res.body);
        text(document.getElementById("updated"), "Last updated " + new Date().toLocaleTimeString() + ".");
      })
      .catch(function (err) {
        text(document.getElementById("updated"), "Not updated: " + err.message);
      })
      .then(function () {
        if (!stopped) window.setTimeout(poll, PERIOD_MS);
      });
  }

  window.setTimeout(poll, PERIOD_MS);
})();
