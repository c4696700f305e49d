from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from noctispro.accounts.auth import (
    LoginThrottled,
    check_throttle,
    clear_failures,
    record_failure,
)


def client_ip(request: Any) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's login form with the throttle the API token endpoint uses."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        ip = client_ip(self.request)
        try:
            check_throttle(username, ip)
        except LoginThrottled as exc:
            raise ValidationError(
                "Too many failed sign-ins. Try again in %(wait)s seconds.",
                code="throttled",
                params={"wait": exc.retry_after},
            ) from exc
        try:
            cleaned = super().clean()
        except ValidationError:
            record_failure(username, ip)
            raise
        clear_failures(username)
        return cleaned


class FacilityChoiceForm(forms.Form):
    """A form with a `facility` choice that only shows when there is a choice to make."""

    facility = forms.ChoiceField(required=False)

    def __init__(self, *args: Any, facility_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["facility"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = facility_choices
        if len(facility_choices) <= 1:
            field.widget = forms.HiddenInput()


class OrderForm(FacilityChoiceForm):
    """A scheduled procedure, in the words of the Modality Worklist (PS3.4 K.6.1)."""

    patient_name = forms.CharField(max_length=324, help_text="Family^Given, as DICOM writes it")
    patient_id = forms.CharField(max_length=64, label="Patient ID")
    patient_birth_date = forms.DateField(required=False, widget=forms.DateInput({"type": "date"}))
    patient_sex = forms.ChoiceField(
        required=False, choices=[("", "—"), ("F", "Female"), ("M", "Male"), ("O", "Other")]
    )
    accession_number = forms.CharField(
        max_length=16, required=False, help_text="Left empty, one is generated"
    )
    modality = forms.CharField(max_length=16, initial="CT")
    scheduled_station_ae_title = forms.CharField(
        max_length=16, required=False, label="Scheduled station AE title"
    )
    scheduled_start = forms.DateTimeField(
        widget=forms.DateTimeInput({"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M"],
        label="Scheduled start",
    )
    requested_procedure_description = forms.CharField(
        max_length=64, required=False, label="Procedure"
    )
    referring_physician_name = forms.CharField(max_length=324, required=False)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"multiple": True}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> Any:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(d, initial) for d in data]
        return [single(data, initial)]


class UploadForm(FacilityChoiceForm):
    dicom_files = MultipleFileField(label="DICOM files or zip archives")


class RemoteQueryForm(forms.Form):
    """A study-level C-FIND of a remote node, in the words of the identifier (PS3.4 C.6.2.1)."""

    node = forms.ChoiceField(label="Node")
    patient_name = forms.CharField(
        label="Patient name", required=False, max_length=64, help_text="Wildcards: * and ?"
    )
    patient_id = forms.CharField(label="Patient ID", required=False, max_length=64)
    accession_number = forms.CharField(label="Accession", required=False, max_length=16)
    study_date_from = forms.DateField(
        label="Study date from", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    study_date_to = forms.DateField(
        label="Study date to", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    modality = forms.CharField(label="Modality", required=False, max_length=16)

    def __init__(self, *args: Any, node_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["node"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = node_choices

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("study_date_from"), data.get("study_date_to")
        if start and end and start > end:
            self.add_error("study_date_to", "The end date is before the start date.")
        return data

    def filters(self) -> dict[str, str]:
        """The C-FIND filters: only the fields filled in (the rest are return keys)."""
        data = self.cleaned_data
        start, end = data.get("study_date_from"), data.get("study_date_to")
        dates = ""
        if start or end:
            dates = f"{start:%Y%m%d}" if start else ""
            dates = dates if start == end else f"{dates}-{end:%Y%m%d}" if end else f"{dates}-"
        filters = {
            "PatientName": data.get("patient_name", "").strip(),
            "PatientID": data.get("patient_id", "").strip(),
            "AccessionNumber": data.get("accession_number", "").strip(),
            "StudyDate": dates,
            "ModalitiesInStudy": data.get("modality", "").strip().upper(),
        }
        return {k: v for k, v in filters.items() if v}
