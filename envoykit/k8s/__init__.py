"""envoykit on Kubernetes: manifests from the mesh model, sidecar injection (offline and as a mutating
admission webhook), endpoint discovery from EndpointSlices, several control-plane replicas, and the
resources that wire envoykit's servers into an Istio or Envoy Gateway installation.

Modules::

    kmesh      the in-cluster copy of a mesh (addresses a pod can bind and reach)
    names      labels, annotations, resource names, the image
    sidecar    the sidecar a pod gets (one function for render, ``k8s inject`` and the webhook)
    objects    small builders of Kubernetes objects (plain dicts in the API's field names)
    render     ``envoykit k8s render``: one manifest file per component (controlplane, servers)
    webhook    the AdmissionReview HTTPS server (admission.k8s.io/v1)
    discovery  EndpointSlices and Pods → the control plane's endpoint source
    integrate  Istio / Envoy Gateway resources for envoykit's servers

See docs/kubernetes.md.
"""
