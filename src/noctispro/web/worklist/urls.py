from django.urls import path

from noctispro.web.worklist import views

app_name = "worklist"
urlpatterns = [
    path("", views.study_list, name="studies"),
    path("studies/<str:study_uid>/", views.study_detail, name="study"),
    path("upload/", views.upload, name="upload"),
    path("orders/", views.orders, name="orders"),
    path("instances/<str:sop_instance_uid>/file", views.instance_file, name="instance-file"),
]
