{{- /*
A CustomResourceDefinition that accepts any object of its kind: the stand-in needs the API
to exist, not the real schema. The last version listed is the storage version.
*/ -}}
{{- define "stand-in.crd" -}}
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {{ .plural }}.{{ .group }}
  {{- if .keep }}
  annotations:
    helm.sh/resource-policy: keep
  {{- end }}
spec:
  group: {{ .group }}
  names:
    kind: {{ .kind }}
    listKind: {{ .kind }}List
    plural: {{ .plural }}
    singular: {{ .kind | lower }}
  scope: {{ .scope }}
  versions:
  {{- $last := sub (len .versions) 1 }}
  {{- range $i, $version := .versions }}
    - name: {{ $version }}
      served: true
      storage: {{ eq $i (int $last) }}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
  {{- end }}
{{- end -}}
