"""Drives dcnet's /v2 API with marathon-python (the `marathon` package on PyPI), as a user's
script would: every call goes through the library and its models, which fail on any key or
shape Marathon would not send. One step per run; each prints what the test checks as JSON.

    python marathon_client.py URL TOKEN CA STEP [ARGS...]

URL is an agent's API (http) or the leading scheduler (https, verified against CA; "-" for
none). The steps are the test's (tests/tests/marathon_api.rs)."""

import collections
import collections.abc
import http.server
import json
import sys
import threading

import requests

# marathon-python 0.13.0 (its last release) encodes JSON with `collections.Iterable`, which
# Python 3.10 removed: any Python user of the library needs this line, against any server.
collections.Iterable = collections.abc.Iterable

from marathon import MarathonClient
from marathon.exceptions import MarathonHttpError, NotFoundError
from marathon.models import MarathonApp, MarathonGroup, MarathonHealthCheck


def client(url, token, ca):
    verify = ca if ca != "-" else True
    token = token if token != "-" else None
    # The library sends auth_token on its requests but not on the event stream, whose
    # session it takes as a parameter for this: a token user passes one that carries it.
    sse = requests.Session()
    if token:
        sse.headers["Authorization"] = f"token={token}"
    return MarathonClient([url], auth_token=token, verify=verify, timeout=20, sse_session=sse)


def task_json(t):
    return {
        "id": t.id,
        "app_id": t.app_id,
        "host": t.host,
        "slave_id": t.slave_id,
        "state": t.state,
        "staged": t.staged_at is not None,
        "started": t.started_at is not None,
        "staged_at": t.staged_at.isoformat() if t.staged_at else None,
        "started_at": t.started_at.isoformat() if t.started_at else None,
        "ips": [ip.ip_address for ip in t.ip_addresses],
        "ports": t.ports,
        "service_ports": t.service_ports,
        "version": t.version,
        "zone": t.zone,
        "region": t.region,
        "health": [h.alive for h in t.health_check_results],
    }


def app_json(a):
    return {
        "id": a.id,
        "cmd": a.cmd,
        "instances": a.instances,
        "tasks_running": a.tasks_running,
        "tasks_staged": a.tasks_staged,
        "tasks_healthy": a.tasks_healthy,
        "version": a.version,
        "config_version": a.version_info.last_config_change_at.isoformat() if a.version_info else None,
        "labels": a.labels,
        "tasks": [task_json(t) for t in (a.tasks or [])],
        "deployments": [d.id for d in (a.deployments or [])],
    }


def main():
    url, token, ca, step, *args = sys.argv[1:]
    c = client(url, token, ca)
    out = {}
    if step == "server":
        info = c.get_info()
        out = {
            "ping": c.ping().decode().strip(),
            "name": info.name,
            "elected": info.elected,
            "leader": c.get_leader()["leader"],
            "info_leader": info.leader,
        }
    elif step == "metrics":
        m = c.get_metrics()
        out = {"keys": sorted(m.keys()), "counters": len(m["counters"]), "gauges": len(m["gauges"])}
    elif step == "create":
        app_id, cmd, instances, label = args
        app = MarathonApp(
            cmd=cmd,
            instances=int(instances),
            cpus=0.01,
            mem=8,
            labels={"tier": label},
            health_checks=[MarathonHealthCheck(protocol="COMMAND", command="true",
                                               grace_period_seconds=5, interval_seconds=1,
                                               timeout_seconds=2, max_consecutive_failures=3)],
        )
        created = c.create_app(app_id, app)
        out = app_json(created)
    elif step == "create-fetching":
        app_id, *uris = args
        fetch = [{"uri": u, "executable": not u.endswith(".tgz")} for u in uris]
        app = MarathonApp(cmd='./tool && test "$(cat data.txt)" = hello && exec sleep 1000',
                          instances=1, cpus=0.01, mem=8, fetch=fetch)
        out = app_json(c.create_app(app_id, app))
    elif step == "last-failure":
        a = c.get_app(args[0], embed_last_task_failure=True)
        out = {"message": a.last_task_failure.message if a.last_task_failure else None}
    elif step == "app":
        out = app_json(c.get_app(args[0]))
    elif step == "tasks":
        out = [task_json(t) for t in (c.list_tasks(args[0]) if args else c.list_tasks())]
    elif step == "filters":
        out = {
            "web": [a.id for a in c.list_apps(label="tier==web")],
            "not_web": [a.id for a in c.list_apps(label="tier!=web")],
            "in": [a.id for a in c.list_apps(label="tier in (web, db)")],
            "id": [a.id for a in c.list_apps(app_id="pyw")],
            "cmd": [a.id for a in c.list_apps(cmd="sleep 1001")],
            "embedded": {a.id: len(a.tasks or []) for a in c.list_apps(embed_tasks=True)},
            "plain": {a.id: len(a.tasks or []) for a in c.list_apps()},
        }
    elif step == "scale":
        app_id, delta = args
        out = c.scale_app(app_id, delta=int(delta))
    elif step == "kill-task":
        app_id, task_id, scale = args
        killed = c.kill_task(app_id, task_id, scale=scale == "true")
        out = task_json(killed) if hasattr(killed, "id") else killed
    elif step == "kill-given":
        task_id, scale = args
        out = {"ok": c.kill_given_tasks([task_id], scale=scale == "true")}
    elif step == "kill-unknown":
        try:
            c.kill_given_tasks(["no-such-task"])
            out = {"refused": False}
        except NotFoundError as e:
            out = {"refused": True, "status": e.status_code}
    elif step == "update":
        app_id, cmd = args
        out = c.update_app(app_id, MarathonApp(cmd=cmd))
    elif step == "versions":
        versions = c.list_versions(args[0])
        out = {"versions": versions, "first": app_json(c.get_version(args[0], versions[0]))}
    elif step == "rollback":
        app_id, version = args
        out = c.rollback_app(app_id, version)
    elif step == "restart":
        out = c.restart_app(args[0])
    elif step == "batch":
        # Round-trips what it read: status fields included, as update_apps sends them.
        apps = [c.get_app(a) for a in args]
        for a in apps:
            a.instances = 1
        out = c.update_apps(apps)
    elif step == "stuck":
        # A new version no agent can take: its deployment stays under way.
        out = c.update_app(args[0], MarathonApp(cmd=args[1], constraints=[["hostname", "CLUSTER", "no-such-node"]]))
    elif step == "deployments":
        out = [{"id": d.id, "apps": d.affected_apps,
                "actions": [[a.action, a.app] for a in d.current_actions],
                "steps": len(d.steps)} for d in c.list_deployments()]
    elif step == "delete-deployment":
        out = c.delete_deployment(args[0], force=args[1] == "true")
    elif step == "events":
        # Subscribes, scales the app up by one, and reads until the deployment succeeds and
        # the new task's status and health came through (or 30 s pass).
        app_id = args[0]
        seen = []
        attached = threading.Event()
        done = threading.Event()

        def read():
            for e in c.event_stream():
                seen.append({"type": e.event_type,
                             "app": getattr(e, "app_id", None),
                             "task": getattr(e, "task_id", None),
                             "status": getattr(e, "task_status", None),
                             "alive": getattr(e, "alive", None)})
                if e.event_type == "event_stream_attached":
                    attached.set()
                kinds = {x["type"] for x in seen}
                if {"deployment_success", "health_status_changed_event"} <= kinds:
                    done.set()
                    return

        threading.Thread(target=read, daemon=True).start()
        if not attached.wait(10):
            raise SystemExit("the event stream never attached")
        c.scale_app(app_id, delta=1)
        done.wait(30)
        out = seen
    elif step == "callbacks":
        # An HTTP callback subscriber on this node (ADDRESS:PORT): subscribes, scales the app
        # by one, waits for the deployment's success to be posted, and unsubscribes.
        app_id, address = args
        received = []
        done = threading.Event()

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                event = json.loads(body)
                received.append({"type": event.get("eventType"), "app": event.get("appId")})
                if event.get("eventType") == "deployment_success":
                    done.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_):
                pass

        server = http.server.ThreadingHTTPServer((address, 0), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://{address}:{server.server_address[1]}/marathon-events"
        subscribed = c.create_event_subscription(url)
        listed = c.list_event_subscriptions()
        c.scale_app(app_id, delta=1)
        done.wait(30)
        deleted = c.delete_event_subscription(url)
        out = {"subscribed": subscribed, "listed": listed, "received": received,
               "deleted": deleted, "after": c.list_event_subscriptions(), "url": url}
    elif step == "group-create":
        group_id, *names = args
        group = MarathonGroup(id=group_id, apps=[
            MarathonApp(id=n, cmd=f"exec sleep 100{i}", instances=1, cpus=0.01, mem=8)
            for i, n in enumerate(names)])
        out = c.create_group(group)
    elif step == "group-rollback":
        # Changes one app of the group, lists the group's versions (the library has no call
        # for the list: the raw request, with its session), and rolls the group back to the
        # oldest with the library's rollback_group.
        group_id, app_id = args
        c.update_app(app_id, MarathonApp(cmd="exec sleep 1999"))
        versions = c._do_request("GET", f"/v2/groups{group_id}/versions").json()
        rolled = c.rollback_group(group_id, versions[-1])
        out = {"versions": versions, "rolled": rolled, "cmd": c.get_app(app_id).cmd}
    elif step == "create-public":
        app = MarathonApp(cmd="exec sleep 1000", instances=2, cpus=0.01, mem=8,
                          accepted_resource_roles=["slave_public"])
        out = app_json(c.create_app(args[0], app))
    elif step == "create-readiness":
        # Ready 3 s after it starts: its server answers /ready only once the file exists.
        app = MarathonApp(
            cmd="(sleep 3; touch ready) & exec python3 -m http.server $PORT0",
            instances=1, cpus=0.01, mem=32,
            port_definitions=[{"port": 0, "name": "http"}],
            readiness_checks=[{"name": "ready", "protocol": "HTTP", "path": "/ready",
                               "portName": "http", "intervalSeconds": 1, "timeoutSeconds": 1,
                               "httpStatusCodesForReady": [200]}])
        out = app_json(c.create_app(args[0], app))
    elif step == "group-with-dependency":
        # /<group>/web depends on /<group>/db, whose health check passes only after 3 s.
        group_id = args[0]
        db = MarathonApp(id="db", cmd="exec sleep 1000", instances=1, cpus=0.01, mem=8,
                         health_checks=[MarathonHealthCheck(
                             protocol="COMMAND", command="test $(( $(date +%s) - $(stat -c %Y stdout) )) -ge 3",
                             grace_period_seconds=30, interval_seconds=1, timeout_seconds=2,
                             max_consecutive_failures=0)])
        web = MarathonApp(id="web", cmd="exec sleep 1000", instances=1, cpus=0.01, mem=8,
                          dependencies=[f"{group_id}/db"])
        made = c.create_group(MarathonGroup(id=group_id, apps=[db, web]))
        # Its deployment, as the library parses it: db's step, then web's.
        plan = [d for d in c.list_deployments() if d.id == made["deploymentId"]]
        out = {"made": made, "steps": [[[a.action, a.app] for a in s.actions] for s in plan[0].steps] if plan else None,
               "current_step": plan[0].current_step if plan else None,
               "total_steps": plan[0].total_steps if plan else None}
    elif step == "group":
        g = c.get_group(args[0])
        out = {"id": g.id, "apps": [[a.id, a.instances] for a in g.apps],
               "groups": [x.id for x in g.groups],
               "root_groups": [x.id for x in c.list_groups()]}
    elif step == "group-scale":
        out = c.scale_group(args[0], float(args[1]))
    elif step == "group-delete":
        out = c.delete_group(args[0])
    elif step == "reset-delay":
        c.reset_delay(args[0])
        out = {"ok": True}
    elif step == "queue":
        out = [{"app": q.app.id, "count": q.count} for q in c.list_queue()]
    elif step == "delete":
        out = c.delete_app(args[0])
    elif step == "missing":
        try:
            c.get_app(args[0])
            out = {"refused": False}
        except NotFoundError:
            out = {"refused": True}
    else:
        raise SystemExit(f"unknown step {step}")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    try:
        main()
    except MarathonHttpError as e:
        print(f"HTTP {e.status_code}: {e.error_message}", file=sys.stderr)
        sys.exit(2)
