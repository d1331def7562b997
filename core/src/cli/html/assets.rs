//! The page's inline style sheet and script (the Content-Security-Policy allows these and
//! nothing fetched).

pub(crate) const STYLE: &str = r#"
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#fff;--panel:#f8f9fb;
--passed:#3fa66a;--failed:#e8833a;--error:#c2571a;--skipped:#a5adba;--crashed:#d92d20;
--running:#2e90fa;--unfinished:#9e77ed;--other:#667085}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1280px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:20px;margin:0 0 4px}
h1 code{font-size:18px}
h2{font-size:16px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.meta{color:var(--muted);margin:2px 0;word-break:break-all}
.chips{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0 0}
.chip{border-radius:12px;padding:2px 10px;background:var(--panel);border:1px solid var(--line);font-weight:600}
.chip i{display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:6px;vertical-align:0}
.state{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;font-weight:700;color:#fff;vertical-align:3px;margin-left:6px}
.state.live{background:var(--running)}.state.ok{background:var(--passed)}.state.bad{background:var(--crashed)}.state.none{background:var(--unfinished)}
.legend{display:flex;flex-wrap:wrap;gap:14px;color:var(--muted);font-size:12px;margin-bottom:6px}
.legend i{display:inline-block;width:12px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
svg{display:block;width:100%;height:auto}
.chart{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:6px 4px}
.lane-label{font-size:12px;fill:var(--fg);font-weight:600}
.lane-sub{font-size:10px;fill:var(--muted)}
.lane-bg{fill:#fff}
.tick{stroke:var(--line);stroke-width:1}
.tick-label{font-size:10px;fill:var(--muted)}
.bar{stroke:#fff;stroke-width:.6}
.bar:hover{stroke:var(--fg);stroke-width:1.5}
.o-passed{fill:var(--passed)}.o-failed{fill:var(--failed)}.o-error{fill:var(--error)}.o-skipped{fill:var(--skipped)}
.o-crashed{fill:var(--crashed)}.o-running{fill:var(--running)}.o-unfinished{fill:var(--unfinished)}.o-other{fill:var(--other)}
.crash-mark{fill:var(--crashed)}
.fbar{fill:#5b8def}.fbar.timed{fill:#9e77ed}
.flabel{font-size:12px;fill:var(--fg)}.fscope{font-size:10px;fill:var(--muted)}.fvalue{font-size:11px;fill:var(--muted)}
table{border-collapse:collapse;width:100%;font-size:13px}
th{text-align:left;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);padding:4px 8px}
td{border-bottom:1px solid var(--line);padding:4px 8px;vertical-align:top}
td.num{text-align:right;white-space:nowrap}
td.id{word-break:break-all}
.outcome{font-weight:700}
.outcome.o-crashed,.outcome.o-failed,.outcome.o-error{color:var(--crashed)}
.outcome.o-unfinished{color:var(--unfinished)}.outcome.o-running{color:var(--running)}
.empty{color:var(--muted);font-style:italic}
.problems li{color:var(--crashed);font-family:ui-monospace,monospace;font-size:12.5px;word-break:break-all}
#tip{position:fixed;z-index:10;max-width:520px;background:#101828;color:#f2f4f7;border-radius:6px;padding:8px 10px;
font-size:12px;line-height:1.4;box-shadow:0 4px 16px rgba(0,0,0,.25);pointer-events:none;word-break:break-all}
#tip .n{font-family:ui-monospace,monospace;font-weight:700;margin-bottom:4px}
#tip .k{color:#98a2b3}
#tip .o-crashed,#tip .o-failed,#tip .o-error{color:#fda29b}
footer{margin-top:32px;color:var(--muted);font-size:12px}
.props{margin:0;padding:0;list-style:none;font-size:12px}
.props li{word-break:break-all}.props b{font-weight:600;color:var(--muted)}
.strip{display:inline-flex;gap:2px;vertical-align:middle}
.strip i{display:inline-block;width:9px;height:14px;border-radius:2px;background:var(--line)}
.strip i.o-passed{background:var(--passed)}.strip i.o-failed{background:var(--failed)}.strip i.o-error{background:var(--error)}
.strip i.o-skipped{background:var(--skipped)}.strip i.o-crashed{background:var(--crashed)}.strip i.o-other{background:var(--other)}
.strip i.none{background:transparent;border:1px dashed var(--line)}
.crash{border:1px solid var(--line);border-left:4px solid var(--crashed);border-radius:6px;padding:8px 12px;margin:10px 0;background:var(--panel)}
.crash h3{font-size:14px;margin:0 0 4px;word-break:break-all}
.crash p{margin:2px 0}
pre.tb{margin:6px 0 0;padding:8px;background:#101828;color:#f2f4f7;border-radius:4px;overflow-x:auto;font-size:12px;line-height:1.4;white-space:pre}
details summary{cursor:pointer;color:var(--muted);font-size:12px;margin-top:4px}
"#;

pub(crate) const SCRIPT: &str = r#"
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("bb-tests").textContent);
  var tip = document.getElementById("tip");
  var svg = document.getElementById("timeline-svg");
  if (!svg) { return; }
  function line(parent, key, value, cls) {
    var d = document.createElement("div");
    var k = document.createElement("span");
    k.className = "k";
    k.textContent = key + " ";
    var v = document.createElement("span");
    if (cls) { v.className = cls; }
    v.textContent = value;
    d.appendChild(k);
    d.appendChild(v);
    parent.appendChild(d);
  }
  function place(ev) {
    var pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    var x = ev.clientX + pad, y = ev.clientY + pad;
    if (x + w > window.innerWidth) { x = Math.max(0, ev.clientX - w - pad); }
    if (y + h > window.innerHeight) { y = Math.max(0, ev.clientY - h - pad); }
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function show(ev) {
    var t = ev.target;
    if (!t.classList || !t.classList.contains("bar")) { return; }
    var x = data[Number(t.getAttribute("data-i"))];
    if (!x) { return; }
    tip.replaceChildren();
    var n = document.createElement("div");
    n.className = "n";
    n.textContent = x.n;
    tip.appendChild(n);
    line(tip, "outcome", x.o + (x.s ? " (" + x.s + ")" : ""), "o-" + x.o);
    line(tip, "duration", x.d);
    if (x.w || x.p) { line(tip, "process", (x.w || "main") + (x.p ? " · pid " + x.p : "")); }
    if (x.ph) { line(tip, "phases", x.ph); }
    if (x.l) { line(tip, "last record", x.l); }
    for (var i = 0; i < x.pr.length; i++) { line(tip, x.pr[i][0] + " =", x.pr[i][1]); }
    if (x.more) { line(tip, "", "… " + x.more + " more properties"); }
    tip.hidden = false;
    place(ev);
  }
  svg.addEventListener("mouseover", show);
  svg.addEventListener("mousemove", function (ev) { if (!tip.hidden) { place(ev); } });
  svg.addEventListener("mouseout", function (ev) {
    if (ev.target.classList && ev.target.classList.contains("bar")) { tip.hidden = true; }
  });
})();
"#;
