from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from noctispro.web.worklist.forms import ThrottledAuthenticationForm

admin.site.site_header = "NoctisPro administration"
admin.site.site_title = "NoctisPro"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(authentication_form=ThrottledAuthenticationForm),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("noctispro.web.worklist.urls")),
]
