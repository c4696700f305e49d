from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from noctispro.accounts.models import AuthFailure, Facility, FacilityAETitle, RemoteNode, User


class FacilityAETitleInline(admin.TabularInline):
    model = FacilityAETitle
    extra = 1


@admin.register(Facility)
class FacilityAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "is_default", "created_at"]
    search_fields = ["code", "name"]
    inlines = [FacilityAETitleInline]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "role", "all_facilities", "is_active", "last_login"]
    list_filter = ["role", "all_facilities", "is_active"]
    filter_horizontal = ["facilities", "groups", "user_permissions"]
    fieldsets = (
        *BaseUserAdmin.fieldsets,  # type: ignore[misc]
        ("NoctisPro", {"fields": ("role", "all_facilities", "facilities")}),
    )
    add_fieldsets = (
        *BaseUserAdmin.add_fieldsets,
        ("NoctisPro", {"fields": ("role", "all_facilities", "facilities")}),
    )


@admin.register(AuthFailure)
class AuthFailureAdmin(admin.ModelAdmin):
    list_display = ["username", "client_ip", "at"]
    readonly_fields = ["username", "client_ip", "at"]


@admin.register(RemoteNode)
class RemoteNodeAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "ae_title",
        "host",
        "port",
        "facility",
        "allow_store",
        "allow_find",
        "allow_move",
        "allow_get",
        "tls",
        "created_at",
    ]
    list_filter = ["facility", "allow_store", "allow_find", "allow_move", "allow_get", "tls"]
    search_fields = ["name", "ae_title", "host", "description"]
    list_select_related = ["facility"]
    fieldsets = (
        (None, {"fields": ("name", "ae_title", "host", "port", "facility", "description")}),
        (
            "What the node may ask of us (C-ECHO is always allowed)",
            {"fields": ("allow_store", "allow_find", "allow_move", "allow_get")},
        ),
        ("Security", {"fields": ("tls",)}),
    )
