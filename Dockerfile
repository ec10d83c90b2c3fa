# rollbot: a static binary in an empty image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# cgo for libpg_query (PostgreSQL's parser, for the schema-compatibility
# check), linked statically so the image stays FROM scratch.
# kustomize_disable_go_plugin_support: see testkit/rollbotbin (rollbot loads
# no kustomize plugins; linking Go's plugin package costs 24 MB and memory).
RUN CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo,kustomize_disable_go_plugin_support \
    -ldflags='-s -w -linkmode external -extldflags "-static"' -o /out/rollbot .

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY --from=build /out/rollbot /rollbot
USER 65532:65532
ENTRYPOINT ["/rollbot"]
CMD ["serve", "--config", "/etc/rollbot/rollbot.yaml"]
