"""The web home page (study list), a study page, and upload — all scoped by facility."""

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
from django.views.decorators.http import require_http_methods

from noctispro.accounts.facilities import FacilityChoiceError, choose_facility, writable_facilities
from noctispro.accounts.models import Facility, Role, User
from noctispro.accounts.scoping import principal_for_user
from noctispro.core.bundles import FileResult, count_outcomes, store_file_or_zip
from noctispro.core.ingest import Origin
from noctispro.index import selectors
from noctispro.orders.services import NewOrder, OrderConflict, create_order, open_orders
from noctispro.storage import get_blob_store
from noctispro.web.worklist.forms import OrderForm, UploadForm, client_ip

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
    return render(request, "worklist/study_detail.html", {"study": study})


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
