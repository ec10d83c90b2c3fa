package slackemu

import "net/http"

func (s *Server) routePage(mux *http.ServeMux) {}
