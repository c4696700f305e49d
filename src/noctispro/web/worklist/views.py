"""The web home page (study list), a study page, upload, orders and query/retrieve of
remote nodes — all scoped by facility."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from noctispro.accounts import nodes
from noctispro.accounts.facilities import FacilityChoiceError, choose_facility, writable_facilities
from noctispro.accounts.models import Facility, Role, User
from noctispro.accounts.nodes import list_nodes
from noctispro.accounts.scoping import principal_for_user
from noctispro.conf import get_settings
from noctispro.core.bundles import FileResult, count_outcomes, store_file_or_zip
from noctispro.core.ingest import Origin
from noctispro.dimse import qr_scu, remote_qr
from noctispro.dimse.tasks import SendRefused, SendRequest, may_send, start_send
from noctispro.index import selectors
from noctispro.jobs.models import Job
from noctispro.jobs.selectors import job_status, visible_job
from noctispro.orders.services import NewOrder, OrderConflict, create_order, open_orders
from noctispro.storage import get_blob_store
from noctispro.web.worklist.forms import OrderForm, RemoteQueryForm, UploadForm, client_ip

UPLOAD_ROLES = {Role.ADMIN, Role.TECHNOLOGIST, Role.RADIOLOGIST}


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _chosen(user: User, code: str) -> Facility | None:
    try:
        return choose_facility(user, code or None)
    except FacilityChoiceError:
        return None


@login_required
def study_list(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    search = request.GET.get("q", "")[:100]
    try:
        page = selectors.study_page(
            principal_for_user(user), search=search, cursor=request.GET.get("after")
        )
    except ValueError:
        return HttpResponseBadRequest("bad page cursor")
    return render(
        request,
        "worklist/study_list.html",
        {"page": page, "search": search, "can_upload": user.role in UPLOAD_ROLES},
    )


@login_required
def study_detail(request: HttpRequest, study_uid: str) -> HttpResponse:
    study = selectors.study_tree(principal_for_user(_user(request)), study_uid)
    if study is None:
        raise Http404("No such study")
    user = _user(request)
    return render(
        request,
        "worklist/study_detail.html",
        {
            "study": study,
            "nodes": list(list_nodes()) if may_send(user) else [],
            "job_id": request.GET.get("job", "") if request.GET.get("job", "").isdigit() else "",
        },
    )


@login_required
@require_http_methods(["POST"])
def send_study(request: HttpRequest, study_uid: str) -> HttpResponse:
    """ "Send to…": start a send_to_node job, back to the study page that follows it."""
    try:
        row = start_send(
            _user(request),
            SendRequest(
                node=request.POST.get("node", ""),
                study_instance_uid=study_uid,
                series_instance_uid=request.POST.get("series") or None,
            ),
        )
    except SendRefused as exc:
        if exc.reason == "forbidden":
            return HttpResponse(str(exc), status=403)
        if str(exc) == "no such study":
            raise Http404("No such study") from exc
        messages.error(request, str(exc))
        return redirect("worklist:study", study_uid=study_uid)
    messages.info(request, f"Sending to {request.POST.get('node')}: job {row.pk}.")
    return redirect(f"{reverse('worklist:study', args=[study_uid])}?job={row.pk}")


@login_required
def job_detail(request: HttpRequest, job_id: int) -> JsonResponse:
    """A job's status for the page that polls it (same shape as GET /api/v1/jobs/{id})."""
    row = visible_job(_user(request), job_id)
    if row is None:
        raise Http404("No such job")
    return JsonResponse(job_status(row))


@login_required
def instance_file(request: HttpRequest, sop_instance_uid: str) -> FileResponse:
    instance = selectors.get_instance(principal_for_user(_user(request)), sop_instance_uid)
    if instance is None:
        raise Http404("No such instance")
    return FileResponse(
        get_blob_store().open(instance.storage_key),
        content_type="application/dicom",
        as_attachment=True,
        filename=f"{instance.sop_instance_uid}.dcm",
    )


@login_required
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if user.role not in UPLOAD_ROLES:
        return render(request, "worklist/upload.html", {"forbidden": True}, status=403)
    facilities = writable_facilities(user)
    choices = [(f.code, f"{f.code} — {f.name}") for f in facilities]
    wants_json = "application/json" in request.headers.get("Accept", "")
    results: list[FileResult] = []
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES, facility_choices=choices)
        if form.is_valid():
            code = form.cleaned_data.get("facility") or (choices[0][0] if choices else "")
            facility = _chosen(user, code)
            if facility is None:
                form.add_error("facility", "You cannot upload to that facility.")
            else:
                origin = Origin(
                    channel="upload", ip=client_ip(request), user_id=user.pk, facility=facility
                )
                for uploaded in form.cleaned_data["dicom_files"]:
                    results.extend(
                        store_file_or_zip(uploaded.name or "upload", uploaded.file, origin)
                    )
        if wants_json:
            if form.errors:
                return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
            return JsonResponse(
                {
                    "summary": count_outcomes(results),
                    "files": [r.__dict__ for r in results],
                }
            )
    else:
        form = UploadForm(facility_choices=choices)
    return render(
        request,
        "worklist/upload.html",
        {
            "form": form,
            "results": results,
            "summary": count_outcomes(results) if results else None,
            "no_facility": not facilities,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def orders(request: HttpRequest) -> HttpResponse:
    """Scheduled procedures: what the modalities see on their worklist, and a form to add one."""
    user = _user(request)
    facilities = writable_facilities(user)
    choices = [(f.code, f"{f.code} — {f.name}") for f in facilities]
    form = OrderForm(request.POST or None, facility_choices=choices)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        code = data.get("facility") or (choices[0][0] if choices else "")
        facility = _chosen(user, code)
        if facility is None:
            form.add_error("facility", "You cannot schedule for that facility.")
        else:
            start = data["scheduled_start"]
            birth = data.get("patient_birth_date")
            try:
                order = create_order(
                    facility,
                    NewOrder(
                        patient_name=data["patient_name"],
                        patient_id=data["patient_id"],
                        patient_birth_date=birth.strftime("%Y%m%d") if birth else "",
                        patient_sex=data.get("patient_sex") or "",
                        accession_number=data.get("accession_number") or "",
                        modality=data["modality"],
                        scheduled_station_ae_title=data.get("scheduled_station_ae_title") or "",
                        scheduled_start_date=start.strftime("%Y%m%d"),
                        scheduled_start_time=start.strftime("%H%M%S"),
                        requested_procedure_description=(
                            data.get("requested_procedure_description") or ""
                        ),
                        referring_physician_name=data.get("referring_physician_name") or "",
                    ),
                    created_by=user,
                )
            except OrderConflict as exc:
                form.add_error("accession_number", str(exc))
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                messages.success(
                    request,
                    f"Scheduled {order.modality} for {order.patient_name}, accession "
                    f"{order.accession_number}.",
                )
                return redirect("worklist:orders")
    rows = list(open_orders(principal_for_user(user))[:500])
    return render(
        request,
        "worklist/orders.html",
        {"form": form, "orders": rows, "no_facility": not facilities},
    )


@login_required
@require_GET
def query_retrieve(request: HttpRequest) -> HttpResponse:
    """Query a remote node at study level (C-FIND SCU) and offer a retrieve per study."""
    user = _user(request)
    if not remote_qr.may_query_remote(user):
        return render(request, "worklist/query_retrieve.html", {"forbidden": True}, status=403)
    usable = remote_qr.usable_nodes(user)
    choices = [(n.name, f"{n.name} — {n.ae_title}@{n.host}:{n.port}") for n in usable]
    asked = "node" in request.GET
    form = RemoteQueryForm(request.GET if asked else None, node_choices=choices)
    context: dict[str, object] = {
        "form": form,
        "no_nodes": not usable,
        "our_ae": get_settings().ae_title,
    }
    if asked and form.is_valid():
        name = form.cleaned_data["node"]
        try:
            query = qr_scu.RemoteQuery(level=qr_scu.Level.STUDY, filters=form.filters())
            result = remote_qr.query_node(user, name, query)
        except ValueError as exc:
            context["error"] = str(exc)
        except (nodes.UnknownNode, remote_qr.NotAllowed, remote_qr.NodeUnusable) as exc:
            context["error"] = str(exc)
        except qr_scu.RemoteError as exc:
            context["error"] = _remote_problem(exc)
        else:
            matches = [
                {**m, "modalities": _as_list(m.get("ModalitiesInStudy"))} for m in result.matches
            ]
            context.update(node=name, result=result, matches=matches)
    return render(request, "worklist/query_retrieve.html", context)


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _remote_problem(exc: qr_scu.RemoteError) -> str:
    lead = {
        "unreachable": "The node cannot be reached",
        "timeout": "The node did not answer in time",
        "rejected": "The node refused",
        "aborted": "The node broke off",
        "failed": "The node answered with a failure",
    }[exc.kind]
    return f"{lead}: {exc.message}"


@login_required
@require_POST
def retrieve_start(request: HttpRequest) -> HttpResponse:
    """Start a retrieve job; JSON for the page's script, a redirect without it."""
    user = _user(request)
    wants_json = "application/json" in request.headers.get("Accept", "")
    name = request.POST.get("node", "")
    study_uid = request.POST.get("study_instance_uid", "").strip()
    problem, status = "", 200
    job: Job | None = None
    if not study_uid or len(study_uid) > 64 or not all(c.isdigit() or c == "." for c in study_uid):
        problem, status = "not a Study Instance UID", 400
    else:
        try:
            job = remote_qr.start_retrieve(user, name, study_uid)
        except nodes.UnknownNode as exc:
            problem, status = str(exc), 404
        except remote_qr.NotAllowed as exc:
            problem, status = str(exc), 403
        except remote_qr.NodeUnusable as exc:
            problem, status = str(exc), 409
    if wants_json:
        if job is None:
            return JsonResponse({"error": problem}, status=status)
        return JsonResponse({"job_id": job.pk, "state": job.state}, status=202)
    if job is None:
        messages.error(request, f"Retrieve not started: {problem}")
    else:
        messages.success(request, f"Retrieve started (job {job.pk}).")
    return redirect("worklist:query-retrieve")


@login_required
@require_GET
def retrieve_status(request: HttpRequest, job_id: int) -> JsonResponse:
    """A retrieve job's state, for the one who started it (and administrators)."""
    user = _user(request)
    job = Job.objects.filter(pk=job_id, kind=remote_qr.RETRIEVE_KIND).first()
    is_admin = user.is_superuser or user.role == Role.ADMIN
    if job is None or not (is_admin or job.payload.get("requested_by") == user.username):
        raise Http404("No such retrieve")
    return JsonResponse(
        {
            "job_id": job.pk,
            "state": job.state,
            "progress": job.progress,
            "message": job.progress_message,
            "result": job.result,
            "error": _last_line(job.error) if job.is_finished or job.error else "",
        }
    )


def _last_line(traceback_text: str) -> str:
    """The message of the exception that ended a job attempt (tracebacks stay in the log)."""
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1]
    head, sep, message = last.partition(": ")
    return message if sep and "." in head and " " not in head else last
