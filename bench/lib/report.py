#!/usr/bin/python3
"""bench/run's report: results.jsonl + facts.json -> OUT.json and OUT.md.

    report.py RESULTS.jsonl FACTS.json OUT_BASE

Figures per shape and server, ratios corral / baseline, and each target
met or missed with the measured figure."""

import json
import sys

CORRALS = ("corral-mem", "corral-redis")
NOT_WRITTEN = {4: "churn", 5: "slow consumers", 7: "runs", 9: "login storm"}


def stress(recs):
    out = {}
    for r in recs:
        sub, pub = r.get("sub") or {}, r.get("pub") or {}
        out[r["server"]] = {
            "subscribers": r["subs"] * r["chans"], "rate": r["rate"],
            "pad": r["pad"], "published": pub.get("published"),
            "publish_errors": pub.get("errors"),
            "reconnects": sub.get("reconnects"), "slow": sub.get("slow"),
            "closed_by_server": sub.get("closed_by_server"),
            "connect_errors": sub.get("connect_errors"),
            "gaps": sub.get("gaps"), "dups": sub.get("dups"),
            "p99_ms": (sub.get("lat_ms") or {}).get("p99"),
            "rss_before_kb": r["rss_before"]["rss_kb"],
            "rss_peak_kb": r["rss_peak_kb"],
            "server_conns_end": r.get("server_conns_end")}
    return out


def storm(recs):
    out = {}
    for r in recs:
        s = out.setdefault(r["server"], {"rate": r["rate"]})
        sub = r.get("sub") or {}
        key = "storm" if r.get("storm") else "alone"
        s[key + "_p99_ms"] = (sub.get("lat_ms") or {}).get("p99")
        s[key + "_lost"] = lost(sub) if sub else None
        if r.get("storm"):
            s["logins"] = r.get("logins")
    for s in out.values():
        a, b = s.get("alone_p99_ms"), s.get("storm_p99_ms")
        s["p99_rise_ms"] = round(b - a, 2) if a is not None and b is not None else None
    return out


def md_storm(d, lines):
    rate = next((x["rate"] for x in d.values()), "?")
    lines += [f"## 9. Login storm (logins during shape 3's chats at {rate} events/s per chat)", "",
              "| server | rate/s per channel | p99 ms alone | p99 ms with logins | rise ms "
              "| logins offered | served | refused (429) | timed out | other "
              "| served p99 ms | refused p99 ms | Retry-After s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in d.items():
        lg = x.get("logins") or {}
        ra = lg.get("retry_after_s") or {}
        lines.append(f"| {name} | {x['rate']} | {fmt(x.get('alone_p99_ms'))} | "
                     f"{fmt(x.get('storm_p99_ms'))} | {fmt(x.get('p99_rise_ms'))} | "
                     f"{fmt(lg.get('offered'))} ({fmt(lg.get('offered_per_s'))}/s) | "
                     f"{fmt(lg.get('served'))} ({fmt(lg.get('served_per_s'))}/s) | "
                     f"{fmt(lg.get('refused'))} | {fmt(lg.get('timed_out'))} | "
                     f"{fmt(lg.get('other'))} | "
                     f"{fmt((lg.get('lat_ms') or {}).get('p99'))} | "
                     f"{fmt((lg.get('refused_ms') or {}).get('p99'))} | "
                     f"{fmt(ra.get('min'))}-{fmt(ra.get('max'))} |")
    lines.append("")
    for name, x in d.items():
        r = x.get("p99_rise_ms")
        lg = x.get("logins") or {}
        lost = x.get("storm_lost")
        lines.append(f"- {name}: p99 rises by less than 5 ms: "
                     f"{'met' if r is not None and r < 5 else 'NOT met'} ({fmt(r)} ms); "
                     f"events lost alone / with logins: {fmt(x.get('alone_lost'))} / "
                     f"{fmt(lost)}; logins served {fmt(lg.get('served'))}, refused at once "
                     f"{fmt(lg.get('refused'))}, timed out {fmt(lg.get('timed_out'))} "
                     f"of {fmt(lg.get('offered'))}")
    lines.append("")


def md_stress(shape, d, lines):
    title = {4: "## 4. Churn (reconnects with Last-Event-ID while publishing)",
             5: "## 5. Slow consumers (1% stop reading)"}[shape]
    lines += [title, "",
              "| server | subscribers | reconnects | slow | closed by server | open at the end (server) | gaps | dups | p99 ms | RSS before KiB | RSS peak KiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in d.items():
        lines.append(f"| {name} | {x['subscribers']} | {fmt(x['reconnects'])} | "
                     f"{fmt(x['slow'])} | {fmt(x['closed_by_server'])} | "
                     f"{fmt(x['server_conns_end'])} | {fmt(x['gaps'])} | "
                     f"{fmt(x['dups'])} | {fmt(x['p99_ms'])} | {x['rss_before_kb']} | "
                     f"{x['rss_peak_kb']} |")
    lines.append("")
    for c in CORRALS:
        if c not in d:
            continue
        x = d[c]
        if shape == 4:
            met = x["gaps"] == 0 and x["dups"] == 0 and (x["reconnects"] or 0) > 0
            lines.append(f"- {c}: every resumed stream without gap or duplicate: "
                         f"{'met' if met else 'NOT met'} ({fmt(x['reconnects'])} "
                         f"reconnects, {fmt(x['gaps'])} gaps, {fmt(x['dups'])} dups; "
                         f"the tail of each stream is not checked)")
        else:
            dropped = x["server_conns_end"] is not None and x["slow"] \
                and x["server_conns_end"] <= x["subscribers"] - x["slow"]
            met = bool(dropped) and x["gaps"] == 0 and x["closed_by_server"] == 0
            lines.append(f"- {c}: slow readers dropped, the others untouched: "
                         f"{'met' if met else 'NOT met'} ({fmt(x['server_conns_end'])} "
                         f"of {x['subscribers']} still open at the end, {fmt(x['slow'])} slow, "
                         f"{fmt(x['gaps'])} gaps); "
                         f"RSS {x['rss_before_kb']} → peak {x['rss_peak_kb']} KiB")
    lines.append("")


def lost(sub):
    return (sub.get("gaps", 0) + sub.get("dups", 0) + sub.get("missing", 0)
            + sub.get("connect_errors", 0) + sub.get("closed_by_server", 0))


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return round(a / b, 2)


def fmt(v, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float):
        v = f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
    return f"{v}{unit}"


def idle(recs):
    out = {}
    for r in recs:
        sub = r.get("sub") or {}
        n = sub.get("connected") or 0
        d = {"subscribers": r["subs"], "connected": n,
             "errors": sub.get("connect_errors"),
             "closed_by_server": sub.get("closed_by_server"),
             "heartbeats": sub.get("heartbeats"),
             "rss_before_kb": r["rss_before"]["rss_kb"],
             "rss_after_kb": r["rss_after"]["rss_kb"]}
        if n:
            d["rss_bytes_per_conn"] = round(
                (r["rss_after"]["rss_kb"] - r["rss_before"]["rss_kb"]) * 1024 / n)
            d["private_dirty_bytes_per_conn"] = round(
                (r["rss_after"]["private_dirty_kb"]
                 - r["rss_before"]["private_dirty_kb"]) * 1024 / n)
        out[r["server"]] = d
    return out


def step_cpu(r, events):
    """The server's CPU over a step's publishing window (bench/run cpu_snap):
    % of one core, CPU-µs per delivered event, the share of CPU periods
    throttled. With the cgroups: the server's group plus its database side
    (PostgreSQL and Redis, for corral); else the server's own /proc time."""
    c = r.get("cpu") or {}
    a, b = c.get("before") or {}, c.get("after") or {}
    if not a or not b:
        return {}
    wall = (b["wall_ns"] - a["wall_ns"]) / 1e9
    out = {}
    if a.get("srv_ns") is not None:
        srv = (b["srv_ns"] - a["srv_ns"]) / 1e9
        db = (b["db_ns"] - a["db_ns"]) / 1e9
    else:
        srv, db = b["proc_s"] - a["proc_s"], 0.0
    total = srv + db
    if wall > 0:
        out["server_cpu_pct"] = round(100 * total / wall, 1)
        out["db_cpu_pct"] = round(100 * db / wall, 1)
    if events:
        out["cpu_us_per_delivery"] = round(total * 1e6 / events, 3)
    if a.get("periods") is not None and b["periods"] > a["periods"]:
        out["throttled_pct"] = round(100 * (b["throttled"] - a["throttled"])
                                     / (b["periods"] - a["periods"]), 1)
    return out


def rates(recs, limit):
    out = {}
    for r in recs:
        sub, pub = r.get("sub") or {}, r.get("pub") or {}
        p99 = (sub.get("lat_ms") or {}).get("p99")
        ok = bool(sub and pub) and p99 is not None and p99 < limit \
            and lost(sub) == 0 and pub.get("errors", 1) == 0 \
            and sub.get("events", 0) > 0 \
            and (pub.get("rate") or 0) >= 0.95 * r["rate"]
        s = out.setdefault(r["server"], {"steps": [], "sustainable_rate": 0,
                                         "cpu_quota_pct": r.get("cpu_quota_pct")})
        st = {"rate": r["rate"], "ok": ok,
              "p50_ms": (sub.get("lat_ms") or {}).get("p50"),
              "p99_ms": p99, "lost": lost(sub) if sub else None,
              "events_per_s": sub.get("events_per_s"),
              "published": pub.get("published"),
              "published_per_s": pub.get("rate"),
              "client_cpu_pct": (sub.get("cpu") or {}).get("pct")}
        st.update(step_cpu(r, sub.get("events")))
        s["steps"].append(st)
        if ok and r["rate"] > s["sustainable_rate"]:
            s["sustainable_rate"] = r["rate"]
    for s in out.values():
        s["steps"].sort(key=lambda st: st["rate"])
    return out


def cpu_ratio(a, b):
    """corral / baseline CPU-µs per delivery at the highest rate both
    passed (lower is better), and that rate."""
    ra = {st["rate"]: st for st in a["steps"] if st["ok"]}
    rb = {st["rate"]: st for st in b["steps"] if st["ok"]}
    common = sorted(set(ra) & set(rb))
    if not common:
        return None, None
    x = common[-1]
    return ratio(ra[x].get("cpu_us_per_delivery"),
                 rb[x].get("cpu_us_per_delivery")), x


def rate_ratios(d):
    """corral / nchan: sustainable rate, and CPU-µs per delivery at the
    highest rate both passed."""
    out = {}
    for c in CORRALS:
        if c in d and "nchan" in d:
            cr, at = cpu_ratio(d[c], d["nchan"])
            out[c] = {"sustainable_rate": ratio(d[c]["sustainable_rate"],
                                                d["nchan"]["sustainable_rate"]),
                      "cpu_us_per_delivery": cr, "cpu_compared_at_rate": at}
    return out


def runs(recs):
    """Shape 7: per server and kind (cli, replay) the runs that ended,
    runs/s (ended runs over first POST to the last run's end), CLI line ->
    SSE latency (replayer stamps only), health probe, loop lag."""
    out = {}
    for r in recs:
        sub, post, probe = r.get("sub") or {}, r.get("post") or {}, r.get("probe") or {}
        done, t0 = sub.get("done") or 0, post.get("t0_ns")
        last = sub.get("done_last_t_ns") or 0
        span = (last - t0) / 1e9 if t0 and last > t0 else None
        lat = sub.get("lat_ms") or {}
        out[f"{r['server']} {r['kind']}"] = {
            "server": r["server"], "kind": r["kind"], "chats": r["chats"],
            "turns": r["turns"], "posted": post.get("posted"),
            "post_errors": post.get("errors"), "done": done,
            "failed": sub.get("failed"), "span_s": round(span, 3) if span else None,
            "runs_per_s": round(done / span, 1) if span else None,
            "lat_ms": lat if r["kind"] == "replay" else None,
            "sse_connect_errors": sub.get("connect_errors"),
            "health": probe.get("health"), "loop_lag_ms": probe.get("loop_lag_ms")}
    return out


def md_runs(d, lines):
    lines += ["## 7. Runs (concurrent chats, each with a run per message)", "",
              "| server | CLI | chats x turns | runs ended ok | failed | runs/s | "
              "CLI line -> SSE p50 / p99 / max ms | health p50 / p99 / max ms | "
              "loop lag p99 / max sampled ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    for x in d.values():
        h, lag, lat = x.get("health") or {}, x.get("loop_lag_ms") or {}, x.get("lat_ms")
        cli = "real CLI" if x["kind"] == "cli" else "replayer"
        lat_s = (f"{fmt(lat.get('p50'))} / {fmt(lat.get('p99'))} / {fmt(lat.get('max'))}"
                 if lat else "n/a (no stamps)")
        lines.append(
            f"| {x['server']} | {cli} | {x['chats']} x {x['turns']} | {fmt(x['done'])} | "
            f"{fmt(x['failed'])} | {fmt(x['runs_per_s'])} | {lat_s} | "
            f"{fmt(h.get('p50_ms'))} / {fmt(h.get('p99_ms'))} / {fmt(h.get('max_ms'))} | "
            f"{fmt(lag.get('p99'))} / {fmt(lag.get('max_sampled'))} |")
    lines.append("")
    for x in d.values():
        h = x.get("health") or {}
        p99 = h.get("p99_ms")
        want = x["chats"] * x["turns"]
        lines.append(f"- {x['server']} {x['kind']}: health p99 < 10 ms: "
                     f"{'met' if p99 is not None and p99 < 10 else 'NOT met'} "
                     f"(p99 {fmt(p99)} ms, {fmt(h.get('errors'))} probe errors); "
                     f"every run ended ok: {'yes' if x['done'] == want else 'NO'} "
                     f"({fmt(x['done'])} of {want})")
    lines.append("")


def summarize(recs):
    by = {}
    for r in recs:
        by.setdefault(r["shape"], []).append(r)
    res, not_run = {}, []
    for shape, rs in sorted(by.items()):
        for r in rs:
            if "not_run" in r:
                not_run.append({"shape": shape, "server": r["server"],
                                "reason": r["not_run"]})
        rs = [r for r in rs if "not_run" not in r]
        if not rs:
            continue
        if shape == 1:
            res["1"] = idle(rs)
        elif shape in (2, 3):
            res[str(shape)] = rates(rs, 100 if shape == 2 else 20)
            res[f"{shape}_ratios"] = rate_ratios(res[str(shape)])
        elif shape in (4, 5):
            res[str(shape)] = stress(rs)
        elif shape == 6:
            res["6"] = {r["server"]: r["wrk"] for r in rs}
        elif shape == 7:
            res["7"] = runs(rs)
        elif shape == 8:
            res["8"] = rs[0]
        elif shape == 9:
            res["9"] = storm(rs)
    for shape, name in NOT_WRITTEN.items():
        if str(shape) not in res and not any(n["shape"] == shape for n in not_run):
            not_run.append({"shape": shape, "server": "all",
                            "reason": f"{name}: not selected"})
    return res, not_run


def md_idle(d, lines):
    lines += ["## 1. Idle subscribers", "",
              "| server | connected | errors | heartbeats | RSS B/conn | Private_Dirty B/conn |",
              "|---|---|---|---|---|---|"]
    for name, s in d.items():
        lines.append(f"| {name} | {s['connected']}/{s['subscribers']} | "
                     f"{fmt(s['errors'])} (+{fmt(s['closed_by_server'])} closed) | "
                     f"{fmt(s['heartbeats'])} | {fmt(s.get('rss_bytes_per_conn'))} | "
                     f"{fmt(s.get('private_dirty_bytes_per_conn'))} |")
    lines.append("")
    for c in CORRALS:
        if c not in d:
            continue
        b = d[c].get("rss_bytes_per_conn")
        for base in ("nchan", "fastapi"):
            if base in d:
                lines.append(f"- {c} / {base}, RSS per connection: "
                             f"{fmt(ratio(b, d[base].get('rss_bytes_per_conn')))}")
        met = b is not None and b < 1024 and not d[c]["errors"] \
            and d[c]["connected"] == d[c]["subscribers"]
        lines.append(f"- {c}: target (< 1024 B per connection, no errors) "
                     f"{'met' if met else 'NOT met'}: {fmt(b)} B per connection")
    lines.append("")


def md_rates(title, d, limit, lines, target_note):
    quota = next((s.get("cpu_quota_pct") for s in d.values()), None)
    lines += [title, "",
              f"Each server (with, for corral, its PostgreSQL and Redis) under a CPU quota of "
              f"{quota}% of one core." if quota else
              "No CPU quota (none set, or cgroups not writable): each server had a whole core.", "",
              "| server | rate/s per channel | published/s per channel | p50 ms | p99 ms | lost | events/s | client CPU % | server CPU % (db) | CPU-µs per delivery | throttled % | ok |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in d.items():
        for st in s["steps"]:
            lines.append(f"| {name} | {st['rate']} | {fmt(st['published_per_s'])} | "
                         f"{fmt(st['p50_ms'])} | "
                         f"{fmt(st['p99_ms'])} | {fmt(st['lost'])} | "
                         f"{fmt(st['events_per_s'])} | {fmt(st['client_cpu_pct'])} | "
                         f"{fmt(st.get('server_cpu_pct'))} ({fmt(st.get('db_cpu_pct'))}) | "
                         f"{fmt(st.get('cpu_us_per_delivery'))} | {fmt(st.get('throttled_pct'))} | "
                         f"{'yes' if st['ok'] else 'NO'} |")
    lines.append("")
    for name, s in d.items():
        lines.append(f"- {name}: highest rate with p99 < {limit} ms, nothing "
                     f"lost and the rate published: {s['sustainable_rate']} events/s per channel")
    for c in CORRALS:
        if c in d and "nchan" in d:
            r = ratio(d[c]["sustainable_rate"], d["nchan"]["sustainable_rate"])
            met = r is not None and r >= 1.5
            top = max(st["rate"] for st in d[c]["steps"] + d["nchan"]["steps"])
            capped = (" — both passed the highest rate tried, so the range "
                      "cannot tell them apart"
                      if d[c]["sustainable_rate"] == d["nchan"]["sustainable_rate"] == top
                      else "")
            lines.append(f"- {c} / nchan sustainable rate: {fmt(r)} "
                         f"(target ≥ 1.5{target_note}: {'met' if met else 'NOT met'}{capped})")
            cr, at = cpu_ratio(d[c], d["nchan"])
            if cr is not None:
                lines.append(f"- {c} / nchan CPU-µs per delivery at {at} events/s per "
                             f"channel (both passed): {fmt(cr)} (lower is better; "
                             f"corral's includes PostgreSQL and Redis)")
    lines.append("")


def md_rest(d, lines):
    lines += ["## 6. REST: GET /api/v1/chats", "",
              "| server | requests/s | p50 ms | p99 ms | errors | non-2xx |",
              "|---|---|---|---|---|---|"]
    for name, w in d.items():
        w = w or {}
        lat = w.get("lat_ms") or {}
        lines.append(f"| {name} | {fmt(w.get('rps'))} | {fmt(lat.get('p50'))} | "
                     f"{fmt(lat.get('p99'))} | {fmt(w.get('errors'))} | {fmt(w.get('non2xx'))} |")
    lines.append("")
    c, b = (d.get("corral-mem") or {}), (d.get("fastapi") or {})
    r = ratio(c.get("rps"), b.get("rps"))
    lines.append(f"- corral / fastapi requests/s: {fmt(r)} (target ≥ 10: "
                 f"{'met' if r is not None and r >= 10 else 'NOT met'})")
    lines.append("")


def md_turns(r, facts, lines):
    t, f = r.get("turns") or {}, r.get("cli_floor") or {}
    g = lambda d, k: (d.get(k) or {})
    n = t.get("follow_ups") or 0
    req = r.get("model_requests")
    row = lambda label, d, first: (
        f"| {label} | {fmt(first)} | {fmt(d.get('p50'))} | {fmt(d.get('p99'))} | "
        f"{fmt(d.get('max'))} |")
    lines += ["## 8. Turn latency (POST .../messages to the reply's first events)",
              "", f"CLI {facts.get('cli')}, scripted model with no delay, "
              f"{n} follow-up turns on a warm CLI (each sent after the previous "
              "run's `done`). The target is judged on the first CLI-originated "
              "event (`system` init): corral's own `message_status` comes "
              "earlier but says nothing about the CLI.", "",
              "| ms | first turn | follow-up p50 | follow-up p99 | follow-up max |",
              "|---|---|---|---|---|",
              row("corral: 202 answered", g(t, "follow_accepted_ms"), None),
              row("corral: first event of the reply (any: message_status)",
                  g(t, "follow_any_ms"), None),
              row("corral: first CLI-originated event (system init)",
                  g(t, "follow_cli_ms"), t.get("first_turn_cli_ms")),
              row("corral: first assistant_text_delta", g(t, "follow_ms"),
                  t.get("first_turn_ms")),
              row("floor: stdin line to the CLI's first stdout line",
                  g(f, "follow_line_ms"), None),
              row("floor: stdin line to system init", g(f, "follow_init_ms"), None),
              row("floor: stdin line to the first text delta",
                  g(f, "follow_ms"), f.get("first_turn_ms")), ""]
    if req is not None and t.get("follow_ups") is not None:
        lines.append(f"- model requests during corral's {n + 1} turns: {req} "
                     f"({fmt(req / (n + 1))} per turn; no side calls when 1)")
    cli = g(t, "follow_cli_ms").get("p99")
    lines.append(f"- follow-up first CLI-originated event < 50 ms: "
                 f"{'met' if cli is not None and cli < 50 else 'NOT met'} "
                 f"(p99 {fmt(cli)} ms; first text delta p99 "
                 f"{fmt(g(t, 'follow_ms').get('p99'))} ms)")
    for label, ck, fk in (("first CLI-originated event", "follow_cli_ms",
                           "follow_init_ms"),
                          ("first text delta", "follow_ms", "follow_ms")):
        c, fl = g(t, ck), g(f, fk)
        if c.get("p50") is None or fl.get("p50") is None:
            continue
        o50 = round(c["p50"] - fl["p50"], 2)
        o99 = round(c["p99"] - fl["p99"], 2)
        lines.append(f"- corral's own overhead, {label} (corral minus the "
                     f"like-for-like floor, same percentile): p50 {fmt(o50)} ms, "
                     f"p99 {fmt(o99)} ms (target p99 < 5 ms: "
                     f"{'met' if o99 < 5 else 'NOT met'})")
    lines.append("")


def main(results, facts_path, out_base):
    recs = [json.loads(line) for line in open(results) if line.strip()]
    facts = json.load(open(facts_path))
    res, not_run = summarize(recs)
    doc = {"facts": facts, "summary": res, "not_run": not_run, "records": recs}
    with open(out_base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    lines = [f"# corral benchmark {facts['started']}{' (quick)' if facts['quick'] else ''}",
             "", f"{facts['cores']} cores ({facts['cpu']}), kernel {facts['kernel']}, "
             f"corral {facts['corral']}, nginx {facts['nginx']} + nchan {facts['nchan']}, "
             f"FastAPI {facts['fastapi']}, uvicorn {facts['uvicorn']}, "
             f"PostgreSQL {facts['postgresql']}, Redis {facts['redis']}, CLI {facts['cli']}. "
             f"Server on core 0, load on core 1: {'yes' if facts['pinned'] else 'no'}. "
             f"Run took {facts['elapsed_s']} s.", ""]
    if "1" in res:
        md_idle(res["1"], lines)
    if "2" in res:
        md_rates("## 2. Hot chat (1 channel)", res["2"], 100, lines, "")
    if "3" in res:
        md_rates("## 3. Many chats", res["3"], 20, lines, "")
    for shape in (4, 5):
        if str(shape) in res:
            md_stress(shape, res[str(shape)], lines)
    if "6" in res:
        md_rest(res["6"], lines)
    if "7" in res:
        md_runs(res["7"], lines)
    if "8" in res:
        md_turns(res["8"], facts, lines)
    if "9" in res:
        md_storm(res["9"], lines)
    if not_run:
        lines += ["## Not run", ""]
        lines += [f"- shape {n['shape']} ({n['server']}): {n['reason']}" for n in not_run]
        lines.append("")
    with open(out_base + ".md", "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:4])
