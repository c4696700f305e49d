from django.urls import path

from noctispro.web.worklist import views

app_name = "worklist"
urlpatterns = [
    path("", views.study_list, name="studies"),
    path("studies/<str:study_uid>/", views.study_detail, name="study"),
    path("studies/<str:study_uid>/send/", views.send_study, name="study-send"),
    path("jobs/<int:job_id>/", views.job_detail, name="job"),
    path("upload/", views.upload, name="upload"),
    path("orders/", views.orders, name="orders"),
    path("query-retrieve/", views.query_retrieve, name="query-retrieve"),
    path("query-retrieve/retrieve", views.retrieve_start, name="retrieve-start"),
    path("query-retrieve/jobs/<int:job_id>", views.retrieve_status, name="retrieve-status"),
    path("instances/<str:sop_instance_uid>/file", views.instance_file, name="instance-file"),
]
